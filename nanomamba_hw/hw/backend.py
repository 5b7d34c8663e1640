"""The back end: instance norm → patch projection → SA-SSM blocks → final LayerNorm → Σ over
frames → classifier → argmax, bit-exact with ``fixed.model.run`` from the features on.

Shared units, one job at a time, driven by a sequencer generated from a step list
(:attr:`Backend.program`):

- :class:`~nanomamba_hw.hw.mac.MACEngine`: every QLinear (patch_proj, the six projections of
  each block, the classifier); weights in one ROM.
- :class:`~nanomamba_hw.hw.norm.NormUnit`: instance-norm setup (once per clip) and apply,
  the blocks' LayerNorms and the final LayerNorm.
- :class:`~nanomamba_hw.hw.block.SSMBlock`: block buffers, tables, state and the scan unit.
- :class:`~nanomamba_hw.hw.head.Head`: Σ over frames, logits, argmax, result.
- the MAC engine's own 2·lanes DSP multipliers; one :class:`~nanomamba_hw.hw.mac.MulBank` of
  three shared by the NormUnit and the scan (never busy together); one
  :class:`~nanomamba_hw.hw.funcs.Exp2NarrowUnit` shared by the NormUnit and the scan (log2 is
  inside the NormUnit); the four activation tables in one PWLMultiUnit in the SSMBlock.

The back end reads the clip's features and SNR values straight from the feature buffer
(``rd``, :func:`~nanomamba_hw.hw.featbuf.FeatureReadSignature`: random access, one word per
(frame, band)) once the whole clip is there (``rd.full``). Per clip: instance-norm setup (the
NormUnit sums each band over the T frames); then per frame t: IN apply (which also sums the
frame's 40 SNR values for the scan's frame constants) → Δ floor/ε → patch_proj → per layer
[LN, in_proj, conv, x_proj, dt_proj, scan ‖ snr_proj of the next layer or frame, out_proj] →
final LN into the Σ; after frame T − 1 the clip is released (``rd.release``), then the
classifier, argmax and ``result`` (see :meth:`Backend._program`).
The five calibration registers are sampled when a clip becomes readable (a write takes effect
for the next clip that is not complete in the feature buffer yet).
"""

from __future__ import annotations

from amaranth.hdl import Const, EnableInserter, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed.model import FixedParams
from .block import (
    BLOCK_LAYERS,
    K_IN,
    K_NONE,
    K_OUT,
    K_SP,
    REG_LAYOUT,
    REG_NAMES,
    ScanUnit,
    SSMBlock,
    block_steps,
)
from .common import shape_of
from .featbuf import FeatureReadSignature
from .funcs import Exp2NarrowUnit
from .head import Head, result_layout
from .mac import MACEngine, MulBank, clamp, delay
from .norm import EXP2_IN_WIDTH, EXP2_OUT_FMT, N_BANDS, NormUnit

# MAC input sources and result destinations
SRC_NORM, SRC_U, SRC_SNR, SRC_BLOCK, SRC_POOL, SRC_SNR_NEXT = range(6)
WB_X, WB_BLOCK, WB_RESID, WB_HEAD = range(4)
# MulBank clients
U_NORM, U_SSM = range(2)


def model_layers(p: FixedParams) -> tuple[list, dict[str, int]]:
    """Every QLinear in MAC-engine job order, and the job index of each by name."""
    layers, job_of = [p.patch_proj], {"patch_proj": 0}
    for i, b in enumerate(p.blocks):
        for name in BLOCK_LAYERS:
            job_of[f"block{i}.{name}"] = len(layers)
            layers.append(getattr(b, name))
    job_of["classifier"] = len(layers)
    layers.append(p.classifier)
    return layers, job_of


def _src_wb(kind: int) -> tuple[int, int]:
    if kind == K_SP:
        return SRC_SNR, WB_BLOCK
    if kind == K_IN:
        return SRC_U, WB_BLOCK
    if kind == K_OUT:
        return SRC_BLOCK, WB_RESID
    return SRC_BLOCK, WB_BLOCK


class Backend(wiring.Component):
    """The back end of the accelerator for any NanoMamba shape (see the module docstring).

    Ports: ``rd`` (the feature buffer's read side); ``result`` out; ``registers`` (the five SSM
    calibration constants, REG_FMT, initialised from ``params.registers``).
    ``n_frames`` (default: the model's 101) is the clip length in frames.
    """

    def __init__(self, params: FixedParams, *, lanes: int = 1, n_frames: int | None = None):
        p = params
        self.params, self.lanes = p, lanes
        self.T = T = n_frames or p.config.n_frames
        f = p.formats
        self.d = d = p.config.d_model
        self.L = len(p.blocks)
        self.layers, self.job_of = model_layers(p)
        self.mac = MACEngine(self.layers, lanes=lanes)
        self.norm = NormUnit(n_frames=T, feat_fmt=p.feat_fmt, in_out_fmt=f["norm"],
                             x_fmt=f["resid"], d=d, ln=[b.ln for b in p.blocks] + [p.final_norm])
        self.ssm = SSMBlock(p.blocks, f, out_layout=self.mac.out_layout,
                            rd_o_width=self.mac.rd.o.shape().width,
                            rd_i_width=self.mac.rd.i.shape().width, in_width=self.mac.in_width)
        self.head = Head(d=d, fn_fmt=f["fn"], pool_fmt=p.classifier.in_fmt, logits_fmt=f["logits"],
                         n_classes=p.config.n_classes, in_width=self.mac.in_width)
        self.program = self._program()
        N = p.blocks[0].d_state
        for b in p.blocks:     # snr_proj beside a scan: G is read before its first write
            if b.snr_proj.w.shape[1] < N + 12:
                raise ValueError("snr_proj has too few inputs to run beside the scan")
        init = dict(zip(REG_NAMES, p.registers.as_tuple()))
        super().__init__({
            "rd": Out(FeatureReadSignature(n_frames=T, n_mels=N_BANDS, feat_fmt=p.feat_fmt)),
            "result": Out(stream.Signature(result_layout(f["logits"], p.config.n_classes))),
            "registers": In(REG_LAYOUT, init=init),
        })
        # probes for tests and cycle counts (set in elaborate)
        self.t = Signal(range(T + 1), name="t")
        self.frame_end = Signal(name="frame_end")
        self.step = Signal(range(len(self.program) + 1), name="step")

    def _program(self) -> list[tuple]:
        """The step list. snr_proj(l) depends only on the frame's SNR: it runs on the MAC
        engine (its own multipliers) during the scan of the layer before — snr_proj(l + 1)
        during scan(l), snr_proj(0) of frame t + 1 during the last scan of frame t (once the
        next SNR frame is in) — so only frame 0 runs snr_proj(0) as a step of its own
        (``mac_t0``). The scan reads G (snr_proj's σ outputs) only in its first N + 10 cycles,
        and the first of them is written ≥ n_in cycles after snr_proj starts."""
        sp = lambda l: self.job_of[f"block{l}.snr_proj"]
        prog: list[tuple] = [("clip_start",), ("in_setup",)]
        self.frame_start = len(prog)
        prog += [("wait_frame",), ("in_apply",), ("frame_consts",),
                 ("mac_t0", sp(0), K_SP, SRC_SNR, WB_BLOCK),
                 ("mac", self.job_of["patch_proj"], K_NONE, SRC_NORM, WB_X)]
        for l in range(self.L):
            for s in block_steps(l, self.job_of):
                if s[0] == "mac":
                    prog.append(("mac", s[1], s[2], *_src_wb(s[2])))
                elif s[0] == "scan":
                    nxt_frame = l + 1 == self.L
                    prog.append(("scan", l, sp(0 if nxt_frame else l + 1),
                                 SRC_SNR_NEXT if nxt_frame else SRC_SNR, nxt_frame))
                else:
                    prog.append(s)
        prog += [("ln", self.L), ("frame_end",),
                 ("mac", self.job_of["classifier"], K_NONE, SRC_POOL, WB_HEAD), ("emit",)]
        return prog

    def elaborate(self, platform):
        m = Module()
        T, d, L, NB = self.T, self.d, self.L, N_BANDS
        mac, norm, ssm, head = self.mac, self.norm, self.ssm, self.head
        m.submodules.mac, m.submodules.norm = mac, norm
        m.submodules.ssm, m.submodules.head = ssm, head
        su = ssm.scan_unit
        # the MAC engine's own multipliers (2·lanes), so it can run snr_proj during a scan;
        # the NormUnit and the scan (never busy together) share three
        m.submodules.mac_muls = EnableInserter({"sync": mac.busy | mac.job.valid})(MulBank([mac.mul]))
        bank = MulBank([norm.mul, su.mul], operands_registered=True)
        m.submodules.muls = EnableInserter({"sync": norm.busy | su.busy})(bank)
        ex = Exp2NarrowUnit(in_width=EXP2_IN_WIDTH, out_fmt=EXP2_OUT_FMT)
        m.submodules.exp2 = EnableInserter({"sync": norm.busy | su.busy})(ex)
        m.d.comb += [ex.i.valid.eq(norm.exp2.i.valid | su.exp2.i.valid),
                     ex.i.payload.eq(norm.exp2.i.payload | su.exp2.i.payload),   # zero when idle
                     norm.exp2.i.ready.eq(ex.i.ready), su.exp2.i.ready.eq(ex.i.ready),
                     ex.o.ready.eq(1),
                     norm.exp2.o.valid.eq(ex.o.valid), norm.exp2.o.payload.eq(ex.o.payload),
                     su.exp2.o.valid.eq(ex.o.valid), su.exp2.o.payload.eq(ex.o.payload)]
        wiring.connect(m, head.result, wiring.flipped(self.result))

        # ---------------- clip state
        t = self.t
        slot = Signal(range(3))
        regs = Signal(REG_LAYOUT)

        # ---------------- the frame's Σ SNR (the scan's frame constants), summed while the
        # instance norm reads the frame's words (the SNR value is in the same word)
        snr_sum = Signal(unsigned(su.snr_sum_width))
        release = Signal()                  # the last frame is done: free the feature buffer
        m.d.comb += self.rd.release.eq(release)
        # ---------------- activation memories and the datapath glue
        mg = Module()
        m.submodules.glue = mg
        norm_buf = Memory(shape=shape_of(self.params.formats["norm"]), depth=NB, init=[])
        x_buf = Memory(shape=shape_of(self.params.formats["resid"]), depth=max(2, d), init=[])
        u_buf = Memory(shape=shape_of(self.params.formats["ln"]), depth=max(2, d), init=[])
        mg.submodules.norm_buf, mg.submodules.x_buf, mg.submodules.u_buf = norm_buf, x_buf, u_buf
        nb_w, nb_r = norm_buf.write_port(), norm_buf.read_port()
        x_w, x_r = x_buf.write_port(), x_buf.read_port()
        u_w, u_r = u_buf.write_port(), u_buf.read_port()
        self.state = {"norm_buf": norm_buf, "x_buf": x_buf, "u_buf": u_buf}

        # ---------------- sequencer context (driven per state)
        sel = Signal(range(2))
        src = Signal(range(6))
        wb = Signal(range(4))
        kind = Signal(range(8))
        layer = Signal(range(max(2, L)))
        norm_dst = Signal(range(4))         # 0 none, 1 norm_buf, 2 u_buf, 3 head
        norm_setup = Signal()               # the NormUnit's instance-norm setup is running
        mg.d.comb += [ssm.kind.eq(kind), ssm.layer.eq(layer),
                     ssm.slot.eq(slot), ssm.frame_age.eq(Mux(t > 2, 2, t)), ssm.regs.eq(regs),
                     ssm.snr_sum.eq(snr_sum), head.first.eq(t == 0)]

        # MAC input reads (data one cycle after the address)
        rd = mac.rd
        with mg.If(src == SRC_BLOCK):       # (gated: keeps the block asleep in simulation)
            mg.d.comb += [ssm.mac_rd.en.eq(rd.en), ssm.mac_rd.o.eq(rd.o), ssm.mac_rd.i.eq(rd.i)]
        mg.d.comb += [nb_r.addr.eq(rd.i), u_r.addr.eq(rd.i), head.pool_rd.addr.eq(rd.i)]
        # the feature buffer: SNR values for the MAC (snr_proj of frame t, or t + 1 beside the
        # last scan of frame t) or features for the NormUnit (setup: addr = frame, band;
        # apply: addr = band); never both in one cycle (the NormUnit and the scans alternate)
        fb = self.rd
        mac_snr = (src == SRC_SNR) | (src == SRC_SNR_NEXT)
        norm_fb = norm_setup | (norm_dst == 1)
        with mg.If(mac_snr):
            mg.d.comb += [fb.en.eq(rd.en), fb.t.eq(t + (src == SRC_SNR_NEXT)), fb.m.eq(rd.i)]
        with mg.Elif(norm_setup):
            mg.d.comb += [fb.en.eq(norm.rd.en), fb.t.eq(norm.rd.addr), fb.m.eq(norm.rd.band)]
        with mg.Else():
            mg.d.comb += [fb.en.eq(norm.rd.en & norm_fb), fb.t.eq(t), fb.m.eq(norm.rd.addr)]
        # Σ SNR of frame t: the words the instance norm's apply reads, one cycle later
        apply_v = delay(mg, norm.rd.en & (norm_dst == 1), 1, "apply_v")
        apply_first = delay(mg, norm.rd.addr == 0, 1, "apply_first")
        with mg.If(apply_v):
            mg.d.sync += snr_sum.eq(Mux(apply_first, 0, snr_sum) + fb.snr)
        with mg.Switch(src):
            with mg.Case(SRC_NORM):
                mg.d.comb += rd.data.eq(nb_r.data)
            with mg.Case(SRC_U):
                mg.d.comb += rd.data.eq(u_r.data)
            with mg.Case(SRC_SNR, SRC_SNR_NEXT):
                mg.d.comb += rd.data.eq(fb.snr)
            with mg.Case(SRC_BLOCK):
                mg.d.comb += rd.data.eq(ssm.mac_rd.data)
            with mg.Case(SRC_POOL):
                mg.d.comb += rd.data.eq(head.pool_rd.data)

        # MAC results
        o = mac.o
        with mg.If(wb == WB_BLOCK):
            mg.d.comb += [ssm.mac_o.valid.eq(o.valid), ssm.mac_o.payload.eq(o.payload)]
        mg.d.comb += [
                     head.logit.valid.eq(o.valid & (wb == WB_HEAD)),
                     head.logit.payload.index.eq(o.payload.index),
                     head.logit.payload.value.eq(o.payload.value),
                     head.logit.payload.last.eq(o.payload.last)]
        resid = self.params.formats["resid"]
        rmw_v = delay(mg, o.valid & (wb == WB_RESID), 1, "rmw_v")
        rmw_i = delay(mg, o.payload.index, 1, "rmw_i")
        rmw_x = delay(mg, o.payload.value, 1, "rmw_x")
        rmw_last = delay(mg, o.valid & o.payload.last & (wb == WB_RESID), 1, "rmw_last")
        with mg.If(rmw_v):
            mg.d.comb += [x_w.addr.eq(rmw_i), x_w.en.eq(1),
                         x_w.data.eq(clamp(mg, rmw_x + x_r.data, resid.min_int, resid.max_int))]
        with mg.Elif(o.valid & (wb == WB_X)):
            mg.d.comb += [x_w.addr.eq(o.payload.index), x_w.data.eq(o.payload.value), x_w.en.eq(1)]
        # x_buf's one read port: the NormUnit (LayerNorm) or the residual read-modify-write
        mg.d.comb += x_r.addr.eq(Mux(wb == WB_RESID, o.payload.index, norm.rd.addr))
        wb_done = Signal()
        mg.d.comb += wb_done.eq(Mux(wb == WB_BLOCK, ssm.wb_done,
                                   Mux(wb == WB_RESID, rmw_last, o.valid & o.payload.last)))

        # NormUnit reads and results
        with mg.If(norm.busy):
            mg.d.comb += norm.rd.data.eq(Mux(norm_fb, fb.feat, x_r.data))
        no = norm.o
        mg.d.comb += [nb_w.addr.eq(no.payload.index), nb_w.data.eq(no.payload.value),
                     nb_w.en.eq(no.valid & (norm_dst == 1)),
                     u_w.addr.eq(no.payload.index), u_w.data.eq(no.payload.value),
                     u_w.en.eq(no.valid & (norm_dst == 2)),
                     head.fn.valid.eq(no.valid & (norm_dst == 3)),
                     head.fn.payload.index.eq(no.payload.index),
                     head.fn.payload.value.eq(no.payload.value)]

        # ---------------- the sequencer
        ms = Module()
        m.submodules.sequencer = ms
        prog = self.program
        sp_st = Signal(2)                   # snr_proj beside a scan: 0 not issued, 1 running, 2 done
        ms.d.comb += [norm.cmd.payload.mode.eq(0), norm.cmd.payload.set.eq(0)]
        with ms.FSM(name="seq"):
            for i, st in enumerate(prog):
                nxt = f"S{i + 1}" if i + 1 < len(prog) else "S0"
                op = st[0]
                with ms.State(f"S{i}"):
                    ms.d.comb += self.step.eq(i)
                    if op == "clip_start":
                        # the registers are sampled when the clip becomes readable
                        with ms.If(self.rd.full):
                            ms.d.sync += [regs.eq(self.registers), t.eq(0), slot.eq(0)]
                            ms.next = nxt
                    elif op in ("in_setup", "in_apply", "ln"):
                        mode = {"in_setup": NormUnit.IN_SETUP, "in_apply": NormUnit.IN_APPLY,
                                "ln": NormUnit.LN}[op]
                        ms.d.comb += [sel.eq(U_NORM), norm.cmd.valid.eq(1),
                                     norm.cmd.payload.mode.eq(mode)]
                        if op == "ln":
                            ms.d.comb += norm.cmd.payload.set.eq(st[1])
                        with ms.If(norm.cmd.ready):
                            ms.next = f"W{i}"
                    elif op == "wait_frame":
                        with ms.If(self.rd.full):       # the whole clip is in the buffer
                            ms.next = nxt
                    elif op in ("frame_consts", "scan"):
                        ms.d.comb += [sel.eq(U_SSM), su.cmd.valid.eq(1),
                                     su.cmd.payload.op.eq(ScanUnit.FRAME if op == "frame_consts"
                                                            else ScanUnit.SCAN)]
                        if op == "scan":
                            ms.d.comb += su.cmd.payload.layer.eq(st[1])
                        with ms.If(su.cmd.ready):
                            ms.next = f"W{i}"
                    elif op in ("mac", "mac_t0"):
                        _, job, k, s, w = st
                        with ms.If((t != 0) if op == "mac_t0" else 0):
                            ms.next = nxt
                        with ms.Else():
                            ms.d.comb += [mac.job.valid.eq(1), mac.job.payload.eq(job),
                                         kind.eq(k), src.eq(s), wb.eq(w)]
                            if k != K_NONE:
                                ms.d.comb += layer.eq(self._layer_of(job))
                            with ms.If(mac.job.ready):
                                ms.next = f"W{i}"
                    elif op == "frame_end":
                        ms.d.comb += [release.eq(t == T - 1), self.frame_end.eq(1)]
                        ms.d.sync += [t.eq(t + 1), slot.eq(Mux(slot == 2, 0, slot + 1))]
                        with ms.If(t == T - 1):
                            ms.next = nxt
                        with ms.Else():
                            ms.next = f"S{self.frame_start}"
                    elif op == "emit":
                        with ms.If(~head.busy):
                            ms.next = nxt
                    else:
                        raise AssertionError(op)
                with ms.State(f"W{i}"):
                    ms.d.comb += self.step.eq(i)
                    if op in ("in_setup", "in_apply", "ln"):
                        ms.d.comb += sel.eq(U_NORM)
                        if op == "in_apply":
                            ms.d.comb += norm_dst.eq(1)
                        elif op == "in_setup":
                            ms.d.comb += norm_setup.eq(1)
                        elif op == "ln":
                            ms.d.comb += norm_dst.eq(3 if st[1] == L else 2)
                        with ms.If(~norm.busy):
                            ms.next = nxt
                    elif op == "frame_consts":
                        ms.d.comb += sel.eq(U_SSM)
                        with ms.If(~su.busy):
                            ms.next = nxt
                    elif op == "scan":
                        # the scan, and snr_proj of the next layer (or frame) on the MAC engine
                        _, l, job, s, nxt_frame = st
                        ms.d.comb += [sel.eq(U_SSM), layer.eq(l), kind.eq(K_SP), src.eq(s),
                                     wb.eq(WB_BLOCK)]
                        skip = (t == T - 1) if nxt_frame else Const(0, 1)
                        with ms.If((sp_st == 0) & ~skip):
                            ms.d.comb += [mac.job.valid.eq(1), mac.job.payload.eq(job)]
                            with ms.If(mac.job.ready):
                                ms.d.sync += sp_st.eq(1)
                        with ms.If((sp_st == 1) & ssm.wb_done):
                            ms.d.sync += sp_st.eq(2)
                        with ms.If(~su.busy & ((sp_st == 2) | skip)):
                            ms.d.sync += sp_st.eq(0)
                            ms.next = nxt
                    elif op in ("mac", "mac_t0"):
                        _, job, k, s, w = st
                        ms.d.comb += [kind.eq(k), src.eq(s), wb.eq(w)]
                        if k != K_NONE:
                            ms.d.comb += layer.eq(self._layer_of(job))
                        with ms.If(wb_done):
                            ms.next = nxt
        return m

    def _layer_of(self, job: int) -> int:
        return (job - 1) // len(BLOCK_LAYERS)
