"""The SA-SSM block in the Amaranth simulator, bit-exact with ``fixed.block.run_block``, sub-step
by sub-step.

- :class:`ScanUnit` alone (sub-steps 6, 8–12: Δ floor/ε, B̃, dbx, dA, h, y, yz) over several
  frames and two layers, on random block inputs, with real weights and with a random block whose
  formats are deliberately tight (dbx, h, y, yz saturate often).
- Every block of the back end per frame and sub-step (LN, xb, SiLU(z), xc, dt_raw/B/C, q0, σ(q),
  Δ, B̃, yz, residual output), observed in the back end's buffers after each step, on a real
  clip's features and on random features and SNR.
"""

from __future__ import annotations

import numpy as np
import torch
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from nanomamba_hw.config import SSMConstants
from nanomamba_hw.fixed.block import (
    SSMRegisters,
    activation_tables,
    block_from_float,
    run_block,
)
from nanomamba_hw.fixed.formats import EDGES, REG_FMT, SNR_FMT, Formats
from nanomamba_hw.fixed.ops import Fmt, SatCounter, requant
from nanomamba_hw.hw.block import (
    K_CONV,
    K_DT,
    K_IN,
    K_OUT,
    K_XP,
    REG_NAMES,
    ScanUnit,
)
from nanomamba_hw.hw.funcs import Exp2Unit
from nanomamba_hw.hw.mac import MulBank
from nanomamba_hw.hw.norm import EXP2_IN_WIDTH, EXP2_OUT_FMT
from nanomamba_hw.hw.sim_util import run_sim, stream_put

from .test_backend import backend_reference, clip_inputs, run_backend
from .test_mac import fixed_params, seed_pcm

# ----------------------------------------------------------------------------------------------
# Scan unit alone


class ScanHarness(Elaboratable):
    def __init__(self, blocks, f):
        self.su = ScanUnit(blocks, f)
        E = self.su.E
        self.mems = {k: Memory(shape=getattr(self.su, f"rd_{k}").data.shape(), depth=E, init=[])
                     for k in ("delta", "xc", "sz")}

    def elaborate(self, platform):
        m = Module()
        su = self.su
        m.submodules.su = su
        m.submodules.muls = MulBank([su.mul], operands_registered=True)
        m.submodules.exp2 = ex = Exp2Unit(in_width=EXP2_IN_WIDTH, out_fmt=EXP2_OUT_FMT)
        wiring.connect(m, su.exp2, ex)
        for k, mem in self.mems.items():
            m.submodules[k] = mem
            r = mem.read_port()
            port = getattr(su, f"rd_{k}")
            m.d.comb += [r.addr.eq(port.addr), port.data.eq(r.data)]
        return m


def synthetic_formats() -> Formats:
    """Tight formats: the scan's dbx, h, y and yz saturate on ordinary inputs."""
    obs = {"norm": 4, "resid": 60, "ln": 4, "inproj": 4, "conv": 4, "xc": 4, "xproj": 6, "q": 8,
           "dtin": 8, "dtpre": 8, "delta": 3, "dbx": 0.05, "h": 0.05, "y": 0.1, "siluz": 4,
           "yz": 0.05, "fn": 4, "logits": 10}
    assert set(obs) == set(EDGES)
    return Formats.calibrate(obs)


def random_blocks(f: Formats, n: int, d=16, E=24, N=4, seed=0):
    from nanomamba_hw.reference.ssm import NanoMambaBlock
    torch.manual_seed(seed)
    out = []
    for _ in range(n):
        blk = NanoMambaBlock(d, E, N, 3, 40, SSMConstants()).double()
        with torch.no_grad():
            blk.sa_ssm.alpha.fill_(float(np.random.default_rng(seed).uniform(-1, 2)))
            blk.sa_ssm.D.normal_(0, 1.5)
        out.append(block_from_float(blk, f))
    return out


def _trace_blocks(blocks, f, regs, T, rng):
    """Random x (full residual range) and SNR through each block: the traces."""
    tables = activation_tables(f)
    snr = rng.integers(0, 1 << SNR_FMT.frac + 1, size=(1, T, 40))
    traces, sat = [], SatCounter()
    for i, bp in enumerate(blocks):
        x = rng.integers(f["resid"].min_int, f["resid"].max_int + 1, size=(1, T, bp.ln.gamma.size))
        tr: dict = {}
        run_block(bp, f, tables, regs, x, snr, sat, tr, "b")
        traces.append(tr)
    return snr[0], traces, tables, sat


def run_scan(blocks, f, regs: SSMRegisters, T: int, seed=0):
    rng = np.random.default_rng(seed)
    snr, traces, tables, sat = _trace_blocks(blocks, f, regs, T, rng)
    h = ScanHarness(blocks, f)
    su = h.su
    E, N = su.E, su.N
    got = []

    async def tb(ctx):
        ctx.set(su.regs, dict(zip(REG_NAMES, regs.as_tuple())))
        for t in range(T):
            ctx.set(su.first_frame, t == 0)
            ctx.set(su.snr_sum, int(snr[t].sum()))
            for l, tr in enumerate(traces):
                rec = {"dbx": {}, "dA": {}, "h": {}, "y": {}, "yz": {}}
                await stream_put(ctx, su.cmd, {"op": ScanUnit.FRAME, "layer": l})
                while ctx.get(su.busy):
                    await ctx.tick()
                rec["floor"] = ctx.get(su.floor_delta)
                rec["eps"] = ctx.get(su.state["eps_x"])
                for k in range(E):
                    ctx.set(h.mems["delta"].data[k], int(tr["b.delta"][0, t, k]))
                    ctx.set(h.mems["xc"].data[k], int(tr["b.xc"][0, t, k]))
                    ctx.set(h.mems["sz"].data[k], int(tr["b.silu_z"][0, t, k]))
                ctx.set(su.B, [int(v) for v in tr["b.B"][0, t]])
                ctx.set(su.C, [int(v) for v in tr["b.C"][0, t]])
                ctx.set(su.G, [int(v) for v in tables["sigmoid"](tr["b.q"][0, t, 1:])])
                await stream_put(ctx, su.cmd, {"op": ScanUnit.SCAN, "layer": l})
                while True:
                    sample = await ctx.tick().sample(
                        su.busy, su.o.valid, su.o.payload,
                        *[s for name in ("dbx", "dA", "h", "y") for s in su.probes[name]])
                    busy, ov, op, *pr = sample[2:]
                    if ov:
                        rec["yz"][op.index] = op.value
                    for j, name in enumerate(("dbx", "dA", "h", "y")):
                        v, i, val = pr[3 * j:3 * j + 3]
                        if v:
                            rec[name][i - (l * E * N if name != "y" else 0)] = val
                    if not busy:
                        break
                rec["Bg"] = [ctx.get(b) for b in su.state["Bg"]]
                got.append((t, l, rec))

    run_sim(h, [tb])
    return got, traces, sat


def _check_scan(got, traces, f, E, N):
    for t, l, rec in got:
        tr = traces[l]
        assert rec["floor"] == int(requant(tr["b.floor"][0, t], REG_FMT.frac, Fmt(40, f["delta"].frac)))
        assert rec["eps"] == int(requant(tr["b.eps"][0, t], REG_FMT.frac, Fmt(40, f["dbx"].frac)))
        assert rec["Bg"] == tr["b.B_gated"][0, t].tolist(), (t, l)
        dbx = np.array([rec["dbx"][i] for i in range(E * N)]).reshape(E, N)
        np.testing.assert_array_equal(dbx, tr["b.dbx"][0, t], err_msg=f"dbx t={t} l={l}")
        dA = np.array([rec["dA"][i] for i in range(E * N)]).reshape(E, N)
        np.testing.assert_array_equal(dA, tr["b.dA"][0, t], err_msg=f"dA t={t} l={l}")
        np.testing.assert_array_equal([rec["y"][k] for k in range(E)], tr["b.y"][0, t],
                                      err_msg=f"y t={t} l={l}")
        np.testing.assert_array_equal([rec["yz"][k] for k in range(E)], tr["b.yz"][0, t],
                                      err_msg=f"yz t={t} l={l}")


def test_scan_unit_random_block_tight_formats():
    f = synthetic_formats()
    blocks = random_blocks(f, 2)
    regs = SSMRegisters(3000, 12000, 4000, 20000, 30000)
    got, traces, sat = run_scan(blocks, f, regs, T=3, seed=1)
    assert any(k.endswith((".dbx", ".h", ".y", ".yz")) for k in sat), sat   # saturation exercised
    _check_scan(got, traces, f, blocks[0].d_inner, blocks[0].d_state)


def test_scan_unit_real_blocks_random_inputs():
    p = fixed_params()
    regs = SSMRegisters.from_constants(SSMConstants(0.02, 0.15, 0.15, 0.30, 0.5))
    got, traces, _ = run_scan(p.blocks, p.formats, regs, T=3, seed=2)
    _check_scan(got, traces, p.formats, p.blocks[0].d_inner, p.blocks[0].d_state)


def test_scan_unit_cycles():
    """2 cycles per (k, n) element plus a fixed overhead."""
    f = synthetic_formats()
    blocks = random_blocks(f, 1, E=8, N=3)
    h = ScanHarness(blocks, f)
    su = h.su
    res = {}

    async def tb(ctx):
        await stream_put(ctx, su.cmd, {"op": ScanUnit.SCAN, "layer": 0})
        c = 0
        while ctx.get(su.busy):
            await ctx.tick()
            c += 1
        res["c"] = c

    run_sim(h, [tb])
    assert res["c"] <= 2 * (8 * 3 + 2) + 3 + 30


# ----------------------------------------------------------------------------------------------
# Every block inside the back end, per sub-step

def _snapshots(p):
    """A step observer for run_backend recording each block sub-step's integers per frame."""
    seen: dict = {}
    E, L, d = p.blocks[0].d_inner, len(p.blocks), p.config.d_model

    def read(ctx, mem, n, base=0):
        return [ctx.get(mem.data[base + i]) for i in range(n)]

    def snap(ctx, dut, step, t):
        st = dut.program[step]
        ssm, s = dut.ssm, dut.ssm.state
        key = None
        if st[0] == "in_apply":
            seen[("instnorm_out", t)] = read(ctx, dut.state["norm_buf"], 40)
        elif st[0] == "ln" and st[1] < L:
            seen[(f"block{st[1]}.ln", t)] = read(ctx, dut.state["u_buf"], d)
        elif st[0] == "ln":
            seen[("pool", t)] = read(ctx, dut.head.state["pool"], d)
        elif st[0] == "scan":
            l = st[1]
            seen[(f"block{l}.yz", t)] = read(ctx, s["yz"], E)
            seen[(f"block{l}.B_gated", t)] = [ctx.get(b) for b in ssm.scan_unit.state["Bg"]]
            # snr_proj ran beside the scan: layer l + 1 of this frame, or layer 0 of the next
            nl, nt = (l + 1, t) if l + 1 < L else (0, t + 1)
            if nt < dut.T:
                seen[(f"block{nl}.q0", nt)] = [ctx.get(s["q0"])]
                seen[(f"block{nl}.G", nt)] = [ctx.get(v) for v in s["G"]]
        elif st[0] == "mac_t0":
            if t == 0:
                seen[("block0.q0", 0)] = [ctx.get(s["q0"])]
                seen[("block0.G", 0)] = [ctx.get(v) for v in s["G"]]
        elif st[0] == "mac":
            job, kind = st[1], st[2]
            if kind == 0:
                if job == 0:
                    seen[("patch_proj", t)] = read(ctx, dut.state["x_buf"], d)
                return
            l = dut._layer_of(job)
            b = f"block{l}"
            if kind == K_IN:
                seen[(f"{b}.xb", t)] = read(ctx, s["hist"], E, (l * 3 + t % 3) * E)
                seen[(f"{b}.silu_z", t)] = read(ctx, s["sz"], E)
            elif kind == K_CONV:
                seen[(f"{b}.xc", t)] = read(ctx, s["xc"], E)
            elif kind == K_XP:
                seen[(f"{b}.dt_raw", t)] = [ctx.get(s["dt_raw"])]
                seen[(f"{b}.B", t)] = [ctx.get(v) for v in s["B"]]
                seen[(f"{b}.C", t)] = [ctx.get(v) for v in s["C"]]
            elif kind == K_DT:
                seen[(f"{b}.delta", t)] = read(ctx, s["delta"], E)
            elif kind == K_OUT:
                seen[(f"{b}.out", t)] = read(ctx, dut.state["x_buf"], d)
        del key

    return seen, snap


def _check_substeps(p, seen, ref):
    tables = activation_tables(p.formats)
    checked = set()
    for (name, t), got in sorted(seen.items()):
        if name == "instnorm_out":
            want = ref["instnorm_out"][0, :, t]
        elif name == "patch_proj":
            want = ref["patch_proj"][0, t]
        elif name == "pool":
            want = ref["final_norm"][0, :t + 1].sum(axis=0)
        elif name.endswith(".q0"):
            want = ref[name[:-1]][0, t, :1]
        elif name.endswith(".G"):
            want = tables["sigmoid"](ref[name[:-1] + "q"][0, t, 1:])
        else:
            want = ref[name][0, t].reshape(-1)
        np.testing.assert_array_equal(got, want, err_msg=f"{name} frame {t}")
        checked.add(name.split(".")[-1])
    return checked


ALL_SUBSTEPS = {"instnorm_out", "patch_proj", "ln", "xb", "silu_z", "xc", "dt_raw", "B", "C",
                "q0", "G", "delta", "B_gated", "yz", "out", "pool"}


def test_blocks_per_substep_real_features():
    p = fixed_params()
    feat, snr, st = clip_inputs(p, seed_pcm("stop")[2400:2400 + 1280])
    seen, snap = _snapshots(p)
    (res,), _, _ = run_backend(p, [(feat, snr)], snapshot=snap)
    assert _check_substeps(p, seen, st) == ALL_SUBSTEPS
    assert res["logits"] == st["logits"][0].tolist()


def test_blocks_per_substep_random_features():
    p = fixed_params()
    rng = np.random.default_rng(5)
    T = 5
    feat = rng.integers(p.feat_fmt.min_int, p.feat_fmt.max_int + 1, size=(40, T))
    feat[7] = 321                                            # a constant band
    snr = rng.integers(0, (1 << SNR_FMT.frac) + 1, size=(40, T))
    regs = SSMRegisters(2000, 11000, 3000, 16000, 25000)
    ref = backend_reference(p, feat, snr, regs)
    seen, snap = _snapshots(p)
    (res,), _, _ = run_backend(p, [(feat, snr)], snapshot=snap,
                               registers=[dict(zip(REG_NAMES, regs.as_tuple()))])
    assert _check_substeps(p, seen, ref) == ALL_SUBSTEPS
    assert res["logits"] == ref["logits"][0].tolist()
    assert res["index"] == int(ref["index"][0])
