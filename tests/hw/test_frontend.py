"""Front-end passes of the spectral engine — log-mel (``hw.frontend.LogMelPass``) and frequency
floor + DualPCEN (``hw.pcen.DualPCENPass``) — bit-exact with ``fixed.frontend``.

- the function-unit operations of the passes equal the fixed model's functions over their
  whole operand domains (numpy): the PCEN gain with ``+δ`` in the unit's output adder, the
  power with ``−δ^r`` and the PCEN_FMT cap, spectral flatness and tilt as capped exp2;
- the engine's :class:`~nanomamba_hw.hw.funcs.FuncUnit`, built with exactly the op list of
  each front-end kind, in simulation against ``FuncOp.reference``;
- each pass on the engine's shared units (``tests/hw/spectral_util.PassSpectral``: mel values
  loaded into RAM B where the bin pipeline puts them, then the pass, the feature buffer):
  features and their Σx, Σx² equal ``fixed.frontend.log_mel`` / ``dual_pcen`` on random and
  extreme mel values (zeros, full scale, a single loud band), on real clips' mel, with the
  published Tiny-DualPCEN constants and with random constants over the float model's clamp
  ranges, routing ``sf`` and ``sf+tilt``; two clips back to back through one bank whose reader
  holds it (the smoothers restart at the second clip), input stalls, and a clip cut by
  ``clip_start``;
- the cycles of a pass equal its documented schedule (``schedule_cycles``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nanomamba_hw.audio import load_clip
from nanomamba_hw.fixed import frontend as ffe
from nanomamba_hw.fixed import mel as fmel
from nanomamba_hw.fixed import stft
from nanomamba_hw.fixed.funcs import EXP2, LOG2, divide
from nanomamba_hw.fixed.ops import rshift_round, saturate
from nanomamba_hw.hw.featbuf import FeatCode
from nanomamba_hw.hw.frontend import (
    LogMelPass,
    feature_code,
    frontend_class,
    pcen_nonnegative,
)
from nanomamba_hw.hw.funcs import FuncUnit
from nanomamba_hw.hw.pcen import DualPCENPass, _check_p2_schedule, _p2_schedule
from nanomamba_hw.hw.snr import snr_ops

from .spectral_util import FB, MEL_MAX, N_MELS, check_features, run_pass
from .test_funcs import _func_operands, check_func_unit

LOGMEL = ffe.FrontendParams("logmel")


def synthetic_params(routing: str, seed: int) -> ffe.FrontendParams:
    """DualPCEN constants without a checkpoint: each expert's s, α, δ, r drawn anywhere in the
    float model's clamp intervals, a decaying floor, a random gate temperature."""
    rng = np.random.default_rng(seed)
    m = np.arange(N_MELS)
    floor = fmel.MEL_FMT.quantize(0.05 * np.exp(-3 * m / (N_MELS - 1)))

    def expert(dlo, dhi):
        return ffe.PCENParams.from_float(rng.uniform(0.05, 0.30, N_MELS),
                                         rng.uniform(0.9, 0.999, N_MELS),
                                         np.exp(rng.uniform(np.log(dlo), np.log(dhi), N_MELS)),
                                         rng.uniform(0.05, 0.25, N_MELS))

    return ffe.FrontendParams("dualpcen", routing, floor, expert(0.001, 0.1), expert(0.5, 5.0),
                              int(ffe.GATE_TEMP_FMT.quantize(rng.uniform(-8, 8))))


def random_mel(rng, T: int) -> np.ndarray:
    """(40, T) mel values over the whole u28 range and many octaves, with a silent frame, a
    full-scale frame, a single loud band and the smallest nonzero value."""
    x = rng.integers(0, 1 << 28, (N_MELS, T)) >> rng.integers(0, 28, (N_MELS, T))
    x[:, 0] = 0
    x[:, 1] = MEL_MAX
    x[:, 2] = np.where(np.arange(N_MELS) == 17, MEL_MAX, 0)
    x[:, -1] = np.maximum(x[:, -1], 1)
    x[3, :] = 1
    return x


def real_mel(word: str, t0: int, T: int, seed_clip) -> np.ndarray:
    pcm = load_clip(seed_clip(word)).pcm[None]
    return fmel.mel_spectrum(FB, stft.stft_magnitude(pcm)[..., t0:t0 + T])[0]


def with_frontend(fixed_params, fe: ffe.FrontendParams):
    """A published artefact with front end ``fe`` (the pass harness uses only ``frontend``
    and ``config``)."""
    return dataclasses.replace(fixed_params["dualpcen"], frontend=fe)


# ------------------------------------------------------------------------------ numpy identities

def test_feature_code():
    """Log-mel features lie in [log_mel(0), log_mel(MEL_MAX)] (monotone): 15 bits with an
    offset; DualPCEN features of valid constants are ≥ 0: 15 bits; constants whose δ^r is not
    what the formula gives lose the guarantee: the full 16-bit format."""
    lo, hi = (int(v) for v in ffe.log_mel(np.array([0, MEL_MAX])))
    c = feature_code(LOGMEL)
    assert c.bits == 15 and c.offset <= lo and hi < c.offset + (1 << 15)
    p = synthetic_params("sf", 0)
    assert pcen_nonnegative(p) and feature_code(p) == FeatCode(15)
    bad = dataclasses.replace(p, stat=dataclasses.replace(p.stat, delta_r=p.stat.delta_r + 1))
    assert not pcen_nonnegative(bad) and feature_code(bad) == FeatCode.full(ffe.FEAT_FMTS["dualpcen"])


def test_pcen_ops_are_the_fixed_functions():
    """How the DualPCEN pass maps fixed.frontend onto the FU's exp2 (min(EXP2(y) + add, cap)):
    ``v = sat(EXP2(lg, GAIN) + δ)`` is op ``gain`` with add δ; ``sat(EXP2(y, POW) − δ^r, PCEN)``
    is op ``pow`` with add −δ^r (results ≥ 0 here, so only the top clamps); SF =
    ``min(EXP2(min(lsf, 0), SF), 1)`` and the tilt quotient ``min(divide(num, den), 1)`` are op
    ``sf`` (capped at 1.0) on the unclamped log difference."""
    ops = DualPCENPass.OPS
    rng = np.random.default_rng(0)
    n = 100_000
    p = synthetic_params("sf+tilt", 1)
    # gain: lg = log2 E − round(α·log2(M + ε)) over the range of E and M
    E = rng.integers(1, 1 << 28, n) >> rng.integers(0, 27, n)
    M = rng.integers(1, 1 << 32, n) >> rng.integers(0, 31, n)
    b = rng.integers(0, N_MELS, n)
    for ex in (p.stat, p.nonstat):
        lg = LOG2(E, 16) - rshift_round(ex.alpha[b] * LOG2(M, 20), 16)
        want_v = saturate(EXP2(lg, ffe.GAIN_FMT) + ex.delta[b], ffe.GAIN_FMT)
        v = ops["gain"].reference(lg, add=ex.delta[b])
        np.testing.assert_array_equal(v, want_v)
        y = rshift_round(ex.r[b] * LOG2(v, 16), 16)
        want = saturate(EXP2(y, ffe.POW_FMT) - ex.delta_r[b], ffe.PCEN_FMT)
        np.testing.assert_array_equal(ops["pow"].reference(y, add=-ex.delta_r[b]), want)
    assert (want_v == ffe.GAIN_FMT.max_int).any()
    # spectral flatness: log difference of either sign
    lsf = rng.integers(-(40 << 16), 4 << 16, n)
    want = np.minimum(EXP2(np.minimum(lsf, 0), ffe.SF_FMT), ffe.ONE_SF)
    np.testing.assert_array_equal(ops["sf"].reference(lsf), want)
    # tilt = num / den with num ≤ den (den = num + 13·high); num = 0 is forced to 0 by the
    # pass (its num_zero flag), as divide's a == 0 rule
    num = rng.integers(1, 1 << 36, n) >> rng.integers(0, 36, n)
    den = num + (rng.integers(0, 1 << 36, n) >> rng.integers(0, 36, n))
    want = np.minimum(divide(num, 0, den, 0, ffe.TILT_RAW_FMT), ffe.ONE_SF)
    got = np.where(num == 0, 0, ops["sf"].reference(LOG2(num, 0), sub=LOG2(den, 0)))
    np.testing.assert_array_equal(got, want)
    assert (num == 0).any() and (want == ffe.ONE_SF).any()


@pytest.mark.parametrize("kind", ["logmel", "dualpcen"])
def test_engine_func_unit_ops(kind):
    """The FuncUnit as ``SpectralEngine.shared_units`` builds it (the SNR ops, then the pass's;
    log 44, exp 34, add 22 bits), random op sequences with idle cycles: every result equals
    ``FuncOp.reference`` (the fixed model's function) at the unit's latencies."""
    ops = dict(snr_ops())
    ops.update(frontend_class(kind).OPS)
    ops = list(ops.values())
    rng = np.random.default_rng(3)
    seq = [(k, x, a, s) for k, x, a, s in _func_operands(ops, rng, 800)
           if -(1 << 21) <= a < 1 << 21 and x.bit_length() < 44]
    check_func_unit(FuncUnit(ops, log_width=44, exp_width=34, add_width=22), ops, seq, rng)


# ------------------------------------------------------------------------------ passes in hardware

def test_logmel_pass_random_extreme_and_real(fixed_params, seed_clip):
    """Two 6-frame clips (random/extreme mel, then real mel of two clips) through one bank
    whose reader holds each full clip; stalls; a clip cut by ``clip_start`` first."""
    p = with_frontend(fixed_params, LOGMEL)
    rng = np.random.default_rng(5)
    mels = [random_mel(rng, 6),
            np.concatenate([real_mel("yes", 35, 3, seed_clip), real_mel("stop", 0, 3, seed_clip)],
                           axis=1)]
    out, _ = run_pass(p, mels, stall=0.3, junk=random_mel(rng, 6), cut=130,
                      release_wait=300, seed=1)
    assert len(out) == 2
    for o, mel in zip(out, mels):
        check_features(o, ffe.log_mel(mel[None])[0])


@pytest.mark.parametrize("routing", ["sf", "sf+tilt"])
def test_dualpcen_pass_synthetic_params(fixed_params, routing):
    """Random constants over the clamp ranges, random/extreme mel; two 5-frame clips through
    one bank (the smoothers restart at frame 0), stalls, a clip cut by ``clip_start``."""
    fe = synthetic_params(routing, seed=1 if routing == "sf" else 2)
    p = with_frontend(fixed_params, fe)
    rng = np.random.default_rng(6)
    mels = [random_mel(rng, 5), random_mel(rng, 5)[:, ::-1].copy()]
    out, _ = run_pass(p, mels, stall=0.3, junk=random_mel(rng, 5), cut=100, release_wait=500,
                      seed=2)
    assert len(out) == 2
    for o, mel in zip(out, mels):
        check_features(o, ffe.dual_pcen(fe, mel[None])[0])


def test_dualpcen_pass_full_scale_smoother(fixed_params):
    """Full-scale mel in every band and frame: frame 0 sets M = 16E (s = 1.0), so from frame 1
    on the smoother state M + 1 is ≥ 2**31 and the GMUL's K = (M + 1)·2**16 + 2**15 is ≥ 2**47
    (unsigned 48 bits, more than the signed port: see ``SpectralEngine.gmul``)."""
    fe = synthetic_params("sf", seed=3)
    p = with_frontend(fixed_params, fe)
    mel = np.full((N_MELS, 5), MEL_MAX, dtype=np.int64)
    m_plus_1 = (MEL_MAX << (ffe.M_FMT.frac - fmel.MEL_FMT.frac)) + 1     # 16E + 1, every frame
    assert m_plus_1 << 16 >= 1 << 47
    want = ffe.dual_pcen(fe, mel[None])[0]
    out, _ = run_pass(p, [mel])
    check_features(out[0], want)


@pytest.mark.parametrize("routing", ["sf", "sf+tilt"])
def test_dualpcen_pass_published_params_real_clips(fixed_params, seed_clip, routing):
    """Tiny-DualPCEN's quantized constants (routing "sf" as published; "sf+tilt" as the preset
    variants use) on real mel of two clips back to back, one frame of the second floored in
    every band; the tilt term must change the gate for "sf+tilt"."""
    pub = fixed_params["dualpcen"].frontend
    assert pub.routing == "sf"
    fe = dataclasses.replace(pub, routing=routing)
    p = with_frontend(fixed_params, fe)
    mels = [real_mel("yes", 30, 5, seed_clip), real_mel("up", 30, 5, seed_clip)]
    mels[1][:, 0] = 0
    tr: dict = {}
    want = [ffe.dual_pcen(fe, mel[None], trace=tr)[0] for mel in mels]
    if routing == "sf+tilt":
        tr_sf: dict = {}
        ffe.dual_pcen(pub, mels[1][None], trace=tr_sf)
        assert (tr["gate"] != tr_sf["gate"]).any()
    out, _ = run_pass(p, mels, stall=0.2, seed=3)
    for o, w in zip(out, want):
        check_features(o, w)


@pytest.mark.parametrize("kind", ["logmel", "dualpcen"])
def test_pass_cycles(fixed_params, kind):
    """Every pass takes exactly ``schedule_cycles(n_mels)`` cycles (``run`` high, up to and
    including ``done``)."""
    fe = LOGMEL if kind == "logmel" else fixed_params["dualpcen"].frontend
    p = with_frontend(fixed_params, fe)
    cls = frontend_class(kind)
    mel = random_mel(np.random.default_rng(7), 5)
    _, info = run_pass(p, [mel])
    print(f"\n{cls.__name__}: {info.front_cycles} cycles per frame")
    assert info.front_cycles == [cls.schedule_cycles(N_MELS)] * 5
    assert cls is (LogMelPass if kind == "logmel" else DualPCENPass)


def test_pcen_pass2_schedule_from_latencies():
    """Pass 2's issue steps follow from the shared units' latencies. With a 1-cycle GMUL the
    derivation gives the hand-written steps of the design before the GMUL was pipelined
    (commit 6a9c22c: smoothers 8, log2 M 9, α 14, exp2 15, log2 v 23, r 28, pow 29, the tail's
    37, 38, 39 with 31 steps per band), which ran bit-exact, and the check accepts them. With
    the current latencies 34 steps per band is the fewest without a collision."""
    old = _p2_schedule(1, FuncUnit.LAT_LP, FuncUnit.LAT_EXP)
    assert list(old.values()) == [8, 9, 14, 15, 23, 28, 29, 37, 38, 39]
    _check_p2_schedule(old, 31, FuncUnit.LAT_LP, FuncUnit.LAT_EXP)
    cur = DualPCENPass.P2_SCHEDULE
    for steps in range(28, DualPCENPass.P2_STEPS):
        with pytest.raises(ValueError, match="PCEN pass 2"):
            _check_p2_schedule(cur, steps, FuncUnit.LAT_LP, FuncUnit.LAT_EXP)
    _check_p2_schedule(cur, DualPCENPass.P2_STEPS, FuncUnit.LAT_LP, FuncUnit.LAT_EXP)
