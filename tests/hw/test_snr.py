"""SNR estimator in the Amaranth simulator, bit-exact with ``fixed.snr.snr_bands`` (both modes)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nanomamba_hw.audio import load_clip
from nanomamba_hw.fixed import mel as fmel
from nanomamba_hw.fixed import snr as fsnr
from nanomamba_hw.fixed import stft
from nanomamba_hw.hw.sim_util import run_sim, stream_get_n, stream_put_all
from nanomamba_hw.hw.snr import SNREstimator

FB = fmel.SparseFilterbank.build()
MAG_MAX = (1 << stft.MAG_FMT.bits) - 1
# Constants as the published checkpoints give them (Tiny: static; Tiny-DualPCEN: EMA) and a
# checkpoint-free pair for CI without ../shared.
PARAMS = {
    "static": fsnr.SNRParams.from_float("static", 4.203),
    "ema": fsnr.SNRParams.from_float("ema", 1.2862, -2.2, -3.0),
}


def clip_payloads(mags: np.ndarray) -> list[dict]:
    """(clips, 257, T) → frame-stream payloads, clip after clip, frame after frame."""
    C, n, T = mags.shape
    return [{"data": int(mags[c, j, t]), "first": int(j == 0), "last": int(j == n - 1)}
            for c in range(C) for t in range(T) for j in range(n)]


def run_snr(p: fsnr.SNRParams, mags: np.ndarray, stall: float = 0.3, seed: int = 0) -> np.ndarray:
    """Clips (C, 257, T) back to back through one estimator → (C, 40, T)."""
    C, _, T = mags.shape
    dut = SNREstimator(params=p, fb=FB, n_frames=T)
    got = []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, clip_payloads(mags), stall=stall, rng=random.Random(seed))

    async def drain(ctx):
        got.extend(await stream_get_n(ctx, dut.o, C * T * 40, stall=stall,
                                      rng=random.Random(seed + 1)))

    run_sim(dut, [feed, drain], deadline=1.0)
    assert [g["first"] for g in got] == [int(i % 40 == 0) for i in range(len(got))]
    assert [g["last"] for g in got] == [int(i % 40 == 39) for i in range(len(got))]
    return np.array([g["data"] for g in got], dtype=np.int64).reshape(C, T, 40).transpose(0, 2, 1)


def extreme_clips(T: int, seed: int) -> np.ndarray:
    """Two clips: random magnitudes with full-scale, silent and single-loud-bin frames; then a
    clip whose first five frames are silent (n0 = 0: the ratio saturates)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 20, (257, T)) >> rng.integers(0, 20, (257, T))
    a[:, 1] = MAG_MAX
    a[:, 3] = 0
    a[:, T - 1] = np.where(np.arange(257) == 77, MAG_MAX, 0)
    a[5, :] = MAG_MAX                                 # one bin loud in every frame
    b = rng.integers(0, 1 << 16, (257, T))
    b[:, :5] = 0
    b[200:, :] = 0                                    # upper bins silent throughout
    return np.stack([a, b])


@pytest.mark.parametrize("mode", ["static", "ema"])
def test_snr_random_and_extremes_two_clips(mode):
    p = PARAMS[mode]
    mags = extreme_clips(7, seed=1)
    exp = fsnr.snr_bands(p, FB, mags)
    assert (exp == (1 << fsnr.SNR_FMT.frac)).any() and (exp == 0).any()
    np.testing.assert_array_equal(run_snr(p, mags), exp)


def test_snr_clip_of_exactly_five_frames():
    """n_frames = 5: the whole clip is the look-ahead; the next clip must start cleanly."""
    rng = np.random.default_rng(4)
    mags = rng.integers(0, 1 << 18, (2, 257, 5))
    p = PARAMS["ema"]
    np.testing.assert_array_equal(run_snr(p, mags, stall=0.1), fsnr.snr_bands(p, FB, mags))


@pytest.mark.parametrize("ckpt,mode", [("NanoMamba-Tiny", "static"),
                                       ("NanoMamba-Tiny-DualPCEN", "ema")])
def test_snr_real_clip_checkpoint_params(published_ckpt, seed_clip, ckpt, mode):
    from nanomamba_hw.checkpoint import load_checkpoint

    ck = load_checkpoint(published_ckpt(ckpt))
    se = ck.model.snr_estimator
    p = fsnr.SNRParams.from_float(mode, float(se.noise_scale.detach()),
                                  *((float(se.raw_beta.detach()), float(se.raw_gamma.detach()))
                                    if mode == "ema" else ()))
    assert p.mode == ck.config.snr_mode
    T = 7
    pcm = load_clip(seed_clip("yes" if mode == "static" else "go")).pcm[None]
    mags = stft.stft_magnitude(pcm)[..., 22:22 + T]       # a speech onset within the clip
    np.testing.assert_array_equal(run_snr(p, mags, seed=5), fsnr.snr_bands(p, FB, mags))


def test_snr_cycles_per_frame():
    """No stalls: cycles from one output frame's end to the next (steady state), and the burst
    after frame 4 (n0 pass + frames 0–4 replayed)."""
    T = 8
    rng = np.random.default_rng(6)
    mags = rng.integers(0, 1 << 18, (1, 257, T))
    dut = SNREstimator(params=PARAMS["ema"], fb=FB, n_frames=T)
    ends, accepted = [], []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, clip_payloads(mags))

    async def watch(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(ends) < T:
            *_, ov, op, iv, ir, ip = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.i.valid, dut.i.ready, dut.i.payload)
            cycle += 1
            if ov and op.last:
                ends.append(cycle)
            if iv and ir and ip.last:
                accepted.append(cycle)

    run_sim(dut, [feed, watch], deadline=1.0)
    burst = ends[4] - accepted[4]
    steady = np.diff(ends[5:]).tolist()
    print(f"\nSNREstimator: frame 4 in → frames 0–4 out: {burst} cycles; then "
          f"{steady} cycles per frame")
    assert burst < 7000 and max(steady) <= 1300
