"""SNR estimator of the spectral engine — the SNR half of the bin pipeline (Σ|X| over the
look-ahead frames, INIT, replay, static or EMA noise, ratio, projection, tanh) — bit-exact with
``fixed.snr.snr_bands``.

- the function-unit operations it uses (``hw.snr.snr_ops``) are the fixed model's functions:
  the ratio ``exp2(log2 |X| − log2 den)`` with its offset and cap equals ``fixed.snr.ratio``'s
  ``divide`` (numpy, random operands over the whole range);
- inside :class:`~nanomamba_hw.hw.spectral.Spectral`, the SNR values in the feature buffer
  equal ``snr_bands`` for both noise modes, with the constants of the published checkpoints
  (Tiny: static, Tiny-DualPCEN: EMA): extreme frames (ratio and projection saturating, silent
  look-ahead bins, both EMA rates), real frames with each checkpoint's own front end (where
  the features are checked too), a clip of exactly the five look-ahead frames followed by
  another through one bank whose reader holds it (backpressure), input stalls, and a clip cut
  by ``clip_start`` mid-frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nanomamba_hw.fixed import frontend as ffe
from nanomamba_hw.fixed import snr as fsnr
from nanomamba_hw.fixed.funcs import LOG2, divide
from nanomamba_hw.fixed.ops import SatCounter
from nanomamba_hw.hw.snr import snr_ops

from .spectral_util import (
    FB,
    check_features,
    expected,
    extreme_mags,
    real_mags,
    run_spectral,
)

ONE = 1 << fsnr.SNR_FMT.frac
MODES = {"static": "logmel", "ema": "dualpcen"}       # which published checkpoint has which


def snr_params(fixed_params, mode: str):
    """The published checkpoint with SNR ``mode``, its front end replaced by log-mel (the
    cheapest pass: these tests are about the SNR half)."""
    p = fixed_params[MODES[mode]]
    assert p.snr.mode == mode
    return dataclasses.replace(p, frontend=ffe.FrontendParams("logmel"))


def test_ratio_op_is_the_fixed_divide():
    """The pipeline's ratio: FU ``log2_0`` of |X| and of den (both taken as integers), then the
    ``ratio`` op = exp2(difference) with the fractional offset (30 − 15) folded into its shift
    and RATIO_FMT's top as its cap; |X| = 0 gives LOG2's zero value, far below the exp2 range,
    so 0 — as ``divide`` (whose ``a == 0`` case is explicit)."""
    rng = np.random.default_rng(0)
    n = 200_000
    mag = rng.integers(0, 1 << 24, n) >> rng.integers(0, 24, n)
    noise = rng.integers(0, 1 << fsnr.NOISE_FMT.bits, n) >> rng.integers(0, 28, n)
    ns = rng.integers(0, 1 << fsnr.NS_FMT.bits, n)
    mag[:100] = 0
    noise[100:200] = 0                                    # den = EPS_DEN: saturates
    den = ns * noise + fsnr.EPS_DEN
    ops = snr_ops()
    got = ops["ratio"].reference(ops["log2_0"].reference(mag),
                                 sub=ops["log2_0"].reference(den))
    sat = SatCounter()
    want = divide(mag, fsnr.MAG_FMT.frac, den, fsnr.DEN_FRAC, fsnr.RATIO_FMT, sat, "r")
    np.testing.assert_array_equal(got, want)
    assert sat["r"] > 0 and (want == 0).any()
    np.testing.assert_array_equal(ops["log2_0"].reference(den), LOG2(den, 0))
    x = np.arange(fsnr.SNR_MEL_FMT.max_int + 1)
    np.testing.assert_array_equal(ops["tanh"].reference(x), fsnr.TANH_TABLE(x))


@pytest.mark.parametrize("mode", ["static", "ema"])
def test_engine_snr_random_and_extremes(fixed_params, mode):
    """7 frames: random u24 over many octaves, full scale, silence, a single loud bin, a bin
    loud throughout, bins 200… silent in frames 0–4 (n0 = 0) then loud; input stalls up to 12
    cycles; a clip cut by ``clip_start`` first."""
    p = snr_params(fixed_params, mode)
    rng = np.random.default_rng(2)
    mag = extreme_mags(rng, 7)
    sat = SatCounter()
    want = fsnr.snr_bands(p.snr, FB, mag[None], sat)[0]
    assert sat["snr_ratio"] and sat["snr_mel"] and (want == ONE).any() and (want == 0).any()
    if mode == "ema":                     # both rates: 8|X| above and below the noise floor
        x8 = mag[1:-1] << 3
        nf = fsnr.noise_floor(p.snr, mag[None])[0][1:-1]
        assert (x8[:, 1:] > nf[:, :-1]).any() and (x8[:, 1:] < nf[:, :-1]).any()
    junk = rng.integers(0, 1 << 20, (257, 3))
    out, _ = run_spectral(p, [mag], stall=0.3, max_stall=12, junk=junk, cut=600, seed=3)
    np.testing.assert_array_equal(out[0].snr, want)


def test_engine_snr_clips_of_five_frames(fixed_params):
    """n_frames = 5 (the whole clip is the look-ahead: INIT and the replay end the clip), EMA,
    two clips through one bank whose reader keeps each full clip up to 3,000 cycles: the
    second clip waits for the release and starts from a clean state."""
    p = snr_params(fixed_params, "ema")
    rng = np.random.default_rng(4)
    mags = [rng.integers(0, 1 << 18, (257, 5)), rng.integers(0, 1 << 12, (257, 5))]
    mags[1][:, 2] = 0
    out, _ = run_spectral(p, mags, stall=0.1, n_banks=1, release_wait=3000, seed=5)
    assert len(out) == 2
    for o, mag in zip(out, mags):
        np.testing.assert_array_equal(o.snr, fsnr.snr_bands(p.snr, FB, mag[None])[0])


@pytest.mark.parametrize("kind", ["logmel", "dualpcen"])
def test_engine_real_frames(fixed_params, seed_clip, kind):
    """Each published checkpoint as it is (Tiny: static SNR + log-mel; Tiny-DualPCEN: EMA SNR
    + DualPCEN) on 8 frames of a real clip around a speech onset, input stalls: the SNR values,
    and — the same run being the engine's integration test on real frames — the features and
    their Σx, Σx²."""
    p = fixed_params[kind]
    mag = real_mags("yes" if kind == "logmel" else "go", seed_clip)[:, 24:32]
    want = expected(p, mag)
    out, _ = run_spectral(p, [mag], stall=0.2, seed=6)
    np.testing.assert_array_equal(out[0].snr, want["snr"])
    check_features(out[0], want["feat"])
