"""Instance norm and LayerNorm in the Amaranth simulator, bit-exact with ``fixed.norm``.

Random inputs (including zero and huge variance, full-scale extremes) and real ones (the
instance norm's features and the blocks' residual streams of a seed clip).
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from nanomamba_hw.fixed.norm import IN_EPS, LayerNormParams, layer_norm, normalize
from nanomamba_hw.fixed.ops import Fmt
from nanomamba_hw.hw.funcs import Exp2Unit
from nanomamba_hw.hw.mac import MulBank
from nanomamba_hw.hw.norm import EXP2_IN_WIDTH, EXP2_OUT_FMT, NormUnit
from nanomamba_hw.hw.sim_util import run_sim, stream_put

from .test_mac import fixed_params, seed_pcm

FEAT = Fmt(16, 11)
NORM = Fmt(16, 11)
RESID = Fmt(24, 11)


class NormHarness(wiring.Component):
    """The unit with its multipliers, the exp2 unit and an input memory the test writes:
    ``rd`` reads word ``band · addr_n + addr`` (the unit drives ``band`` only in the instance
    norm's setup, 0 otherwise)."""

    def __init__(self, unit: NormUnit):
        self.unit = unit
        super().__init__({})
        self.xmem = Memory(shape=unit.rd.data.shape(), depth=unit.addr_n * unit.n_bands, init=[])

    def elaborate(self, platform):
        m = Module()
        u = self.unit
        m.submodules.unit = u
        m.submodules.muls = MulBank([u.mul], operands_registered=True)
        m.submodules.exp2 = ex = Exp2Unit(in_width=EXP2_IN_WIDTH, out_fmt=EXP2_OUT_FMT)
        wiring.connect(m, u.exp2, ex)
        m.submodules.xmem = self.xmem
        rd = self.xmem.read_port()
        m.d.comb += [rd.addr.eq(u.rd.band * u.addr_n + u.rd.addr), rd.en.eq(1),
                     u.rd.data.eq(rd.data)]
        return m


async def _collect(ctx, u, n):
    out = {}
    cycles = 0
    while len(out) < n:
        _, _, valid, payload = await ctx.tick().sample(u.o.valid, u.o.payload)
        cycles += 1
        if valid:
            out[payload.index] = payload.value
            assert payload.last == (len(out) == n)
        assert cycles < 100 * n + 200
    while ctx.get(u.busy):
        await ctx.tick()
    return [out[i] for i in range(n)], cycles


def run_instance_norm(feat: np.ndarray, frames=None):
    """feat (40, T) → hardware normalised (40, T) (the given frames), cycles per frame and
    the setup's cycles."""
    nb, T = feat.shape
    unit = NormUnit(n_frames=T, feat_fmt=FEAT, in_out_fmt=NORM, x_fmt=RESID, d=16, ln=[])
    h = NormHarness(unit)
    got = np.zeros_like(feat)
    frame_cycles = []
    setup = []

    async def tb(ctx):
        for b in range(nb):
            for t in range(T):
                ctx.set(h.xmem.data[b * unit.addr_n + t], int(feat[b, t]))
        await stream_put(ctx, unit.cmd, {"mode": NormUnit.IN_SETUP, "set": 0})
        c = 0
        while ctx.get(unit.busy):
            await ctx.tick()
            c += 1
        setup.append(c)
        for t in (range(T) if frames is None else frames):
            for b in range(nb):
                ctx.set(h.xmem.data[b], int(feat[b, t]))
            await stream_put(ctx, unit.cmd, {"mode": NormUnit.IN_APPLY, "set": 0})
            vals, c = await _collect(ctx, unit, nb)
            got[:, t] = vals
            frame_cycles.append(c)

    run_sim(h, [tb])
    return got, frame_cycles, setup[0]


def run_layer_norms(params: list[LayerNormParams], xs: list[tuple[int, np.ndarray]], x_fmt=RESID):
    """xs: (set, x vector of d) pairs → the hardware outputs and cycles of each."""
    d = len(xs[0][1])
    unit = NormUnit(n_frames=101, feat_fmt=FEAT, in_out_fmt=NORM, x_fmt=x_fmt, d=d, ln=params)
    h = NormHarness(unit)
    got, cycles = [], []

    async def tb(ctx):
        for s, x in xs:
            for i in range(d):
                ctx.set(h.xmem.data[i], int(x[i]))
            await stream_put(ctx, unit.cmd, {"mode": NormUnit.LN, "set": s})
            vals, c = await _collect(ctx, unit, d)
            got.append(np.array(vals))
            cycles.append(c)

    run_sim(h, [tb])
    return got, cycles


def _hard_features(rng, T):
    f = rng.integers(FEAT.min_int, FEAT.max_int + 1, size=(40, T))
    f[0] = 1234                                   # zero variance
    f[1] = FEAT.min_int                           # zero variance at the extreme
    f[2] = np.where(np.arange(T) % 2, FEAT.max_int, FEAT.min_int)   # huge variance
    f[3] = 0
    f[3, 0] = FEAT.max_int                        # one spike
    f[4] = rng.integers(-2, 3, size=T)            # tiny variance
    f[5] = FEAT.max_int
    return f


@pytest.mark.parametrize("T", [9, 101])
def test_instance_norm_random(T):
    rng = np.random.default_rng(T)
    feat = _hard_features(rng, T)
    frames = list(range(0, T, max(1, T // 10)))     # stats over all T frames, apply on some
    got, _, _ = run_instance_norm(feat, frames=frames)
    want = normalize(feat, FEAT.frac, -1, NORM, IN_EPS)
    np.testing.assert_array_equal(got[:, frames], want[:, frames])


def test_instance_norm_real_features():
    p = fixed_params()
    from nanomamba_hw.fixed.model import run
    st = run(p, seed_pcm("yes")[:1280], trace=True).stages
    feat = st["instnorm_in"][0]
    assert p.feat_fmt == FEAT and p.formats["norm"] == NORM
    got, cycles, setup = run_instance_norm(feat)
    np.testing.assert_array_equal(got, st["instnorm_out"][0])
    assert max(cycles) <= 40 + 12
    T = feat.shape[1]
    assert setup <= 40 * (T + 34)          # T reads and ~33 cycles of sums, log2, exp2 per band


def _ln_params(rng, d, out_fmt=None):
    g = rng.uniform(-3.5, 3.5, d)
    b = rng.uniform(-1, 1, d)
    return LayerNormParams.from_float(g, b, out_fmt or Fmt(16, 12))


@pytest.mark.parametrize("d", [16, 21, 24])
def test_layer_norm_random(d):
    rng = np.random.default_rng(d)
    params = [_ln_params(rng, d), _ln_params(rng, d, Fmt(16, 10))]
    xs = []
    for k in range(10):
        x = rng.integers(RESID.min_int, RESID.max_int + 1, size=d)
        if k == 0:
            x[:] = 777                                   # zero variance
        elif k == 1:
            x[:] = RESID.min_int
        elif k == 2:
            x = np.where(np.arange(d) % 2, RESID.max_int, RESID.min_int)   # largest variance
        elif k == 3:
            x = rng.integers(-3, 4, size=d)              # tiny variance
        elif k == 4:
            x[:] = RESID.max_int
            x[5] = RESID.min_int
        elif k == 5:
            x = rng.integers(-2 ** 12, 2 ** 12, size=d)
        xs.append((k % 2, x))
    got, cycles = run_layer_norms(params, xs)
    for (s, x), g in zip(xs, got):
        np.testing.assert_array_equal(g, layer_norm(params[s], x, RESID.frac), err_msg=str(x))
    assert max(cycles) <= 3 * d + 45        # sums d, columns ~17, log2/exp2 ~12, apply 2·d


def test_layer_norm_real_residuals():
    p = fixed_params()
    from nanomamba_hw.fixed.model import run
    st = run(p, seed_pcm("stop")[:1920], trace=True).stages
    sets = [b.ln for b in p.blocks] + [p.final_norm]
    srcs = ["patch_proj"] + [f"block{i}_out" for i in range(len(p.blocks))]
    xs, want = [], []
    for s, key in enumerate(srcs):
        for t in range(0, st[key].shape[1], 3):
            x = st[key][0, t]
            xs.append((s, x))
            want.append(layer_norm(sets[s], x, p.formats["resid"].frac))
    got, _ = run_layer_norms(sets, xs, p.formats["resid"])
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
