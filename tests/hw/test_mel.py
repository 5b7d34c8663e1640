"""Mel filterbank of the spectral engine, bit-exact with ``fixed.mel.mel_spectrum``.

- :func:`~nanomamba_hw.hw.mel.bin_weights`: the one stored weight per bin (lower band ``w``,
  upper band ``1 − w``, ``close`` on a band's last bin) reproduces the fixed model's dense
  filterbank exactly, and a filterbank without that structure is refused;
- :class:`~nanomamba_hw.hw.mel.BandMAC` alone: the mel stream and the SNR-projection stream
  interleaved bin by bin as the bin pipeline issues them, with idle cycles, over random,
  extreme and real frames: every closing band equals ``SparseFilterbank.apply`` plus the
  rounding constant;
- the bin pipeline inside the engine (:class:`~nanomamba_hw.hw.spectral.Spectral`, both
  published front-end kinds): the saturated mel values it writes to RAM B for the front-end
  pass equal ``mel_spectrum`` on random, extreme and real frames, with input stalls, after a
  clip cut by ``clip_start`` in the middle of a frame whose rest still arrives.
"""

from __future__ import annotations

import random
import types

import numpy as np
import pytest

from nanomamba_hw.fixed import mel as fmel
from nanomamba_hw.fixed import snr as fsnr
from nanomamba_hw.fixed.ops import rshift_round
from nanomamba_hw.hw.mel import ONE, BandMAC, bin_weights
from nanomamba_hw.hw.sim_util import run_sim
from nanomamba_hw.hw.snr import MEL_SHIFT, SNR_SHIFT

from .spectral_util import FB, MAG_MAX, MEL_MAX, real_mags, run_spectral

N_BINS = FB.dense.shape[1]


def test_bin_weights_reproduce_the_filterbank():
    """Rebuilding the dense matrix from (w, close) per bin gives ``FB.dense`` exactly (bins 0
    and 256 carry no weight, the hardware skips them)."""
    w = bin_weights(FB)
    dense = np.zeros_like(FB.dense)
    band = 0
    for j in range(1, N_BINS - 1):
        wj, close = w[j]
        dense[band, j] = wj
        if band + 1 < dense.shape[0]:
            dense[band + 1, j] = ONE - wj
        band += close
    assert band == dense.shape[0]
    assert not FB.dense[:, [0, N_BINS - 1]].any()
    np.testing.assert_array_equal(dense, FB.dense)


@pytest.mark.parametrize("defect", ["sum", "gap"])
def test_bin_weights_refuse_other_filterbanks(defect):
    d = FB.dense.copy()
    if defect == "sum":          # two overlapping weights that do not add up to 1.0
        j = int(np.flatnonzero((d > 0).sum(axis=0) == 2)[3])
        d[np.flatnonzero(d[:, j])[0], j] -= 1
    else:                        # a bin that belongs to a band that is not the lowest open one
        d[5, 100] = 1000
    with pytest.raises(ValueError):
        bin_weights(types.SimpleNamespace(dense=d))


def _mac_frames(rng) -> tuple[np.ndarray, np.ndarray]:
    """(257, 4) magnitudes (random u24, full scale, a real loud frame, a single bin) and as
    many random SNR ratios over RATIO_FMT."""
    mags = np.stack([rng.integers(0, MAG_MAX + 1, N_BINS), np.full(N_BINS, MAG_MAX),
                     rng.integers(0, 1 << 16, N_BINS) >> rng.integers(0, 16, N_BINS),
                     np.where(np.arange(N_BINS) == 100, MAG_MAX, 0)], axis=1)
    ratios = rng.integers(0, fsnr.RATIO_FMT.max_int + 1, (N_BINS, 4))
    ratios[:, 1] = fsnr.RATIO_FMT.max_int
    return mags, ratios


def test_band_mac_bit_exact():
    """Per bin: mel lower, mel upper, SNR lower, SNR upper product (the bin pipeline's order;
    each upper product right after its lower one), random idle cycles before a lower product,
    ``clear`` before each frame. Each closing band's value is
    Σ W·x + 2**(shift − 1), so ``>> shift`` is the fixed model's rounded sum."""
    rng = np.random.default_rng(0)
    mags, ratios = _mac_frames(rng)
    w = bin_weights(FB)
    acc_w = max(24, fsnr.RATIO_FMT.bits) + 17 + 6           # as the engine builds it
    dut = BandMAC(x_width=24, shifts=[MEL_SHIFT, SNR_SHIFT], acc_width=acc_w)
    got = {0: [], 1: []}

    async def drive(ctx):
        r = random.Random(1)
        for f in range(mags.shape[1]):
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            await ctx.tick().repeat(4)
            for j in range(1, N_BINS - 1):
                for stream, x in ((0, mags[j, f]), (1, ratios[j, f])):
                    if r.random() < 0.3:
                        await ctx.tick().repeat(r.randint(1, 3))
                    for hi in (0, 1):            # hi right after lo (BandMAC's contract)
                        ctx.set(dut.valid, 1)
                        ctx.set(dut.stream, stream)
                        ctx.set(dut.hi, hi)
                        ctx.set(dut.close, w[j][1])
                        ctx.set(dut.x, int(x))
                        ctx.set(dut.w, w[j][0])
                        await ctx.tick()
                        ctx.set(dut.valid, 0)
            await ctx.tick().repeat(2)

    async def watch(ctx):
        async for _, _, ov, os_, val in ctx.tick().sample(dut.o_valid, dut.o_stream,
                                                           dut.o_value):
            if ov:
                got[os_].append(val)

    run_sim(dut, [drive], background=[watch], deadline=1.0)
    T = mags.shape[1]
    for stream, x, shift in ((0, mags, MEL_SHIFT), (1, ratios, SNR_SHIFT)):
        v = np.array(got[stream], dtype=np.int64).reshape(T, -1).T
        np.testing.assert_array_equal(v, FB.apply(x[None])[0] + (1 << (shift - 1)))
        np.testing.assert_array_equal(v >> shift, rshift_round(FB.apply(x[None])[0], shift))
    mel = fmel.mel_spectrum(FB, mags[None])[0]
    assert (mel == MEL_MAX).any(), "full-scale frames must reach the mel saturation"


@pytest.mark.parametrize("kind", ["logmel", "dualpcen"])
def test_engine_mel_random_extreme_and_real(fixed_params, seed_clip, kind):
    """The mel values the bin pipeline hands to the front-end pass: random u24 and full-scale
    frames (saturating), silence, a single loud bin, two real frames; input stalls up to 12
    cycles (so bins land on every slot phase); a clip cut by ``clip_start``."""
    p = fixed_params[kind]
    rng = np.random.default_rng(1)
    real = real_mags("stop", seed_clip)
    loud = int(np.argmax(real.sum(axis=0)))
    mag = np.stack([rng.integers(0, MAG_MAX + 1, N_BINS), np.full(N_BINS, MAG_MAX),
                    np.zeros(N_BINS, np.int64), real[:, loud], real[:, 3],
                    np.where(np.arange(N_BINS) == 200, MAG_MAX, 0)], axis=1)
    want = fmel.mel_spectrum(FB, mag[None])[0]
    assert (want == MEL_MAX).any() and (want == 0).any()
    junk = rng.integers(0, 1 << 20, (N_BINS, 2))
    out, _ = run_spectral(p, [mag], stall=0.3, max_stall=12, junk=junk, cut=400,
                          watch_mel=True, seed=kind == "dualpcen")
    np.testing.assert_array_equal(out[0].mel, want)
