"""Mel filterbank in the Amaranth simulator, bit-exact with ``fixed.mel.mel_spectrum``."""

from __future__ import annotations

import random

import numpy as np

from nanomamba_hw.audio import load_clip
from nanomamba_hw.fixed import mel as fmel
from nanomamba_hw.fixed import stft
from nanomamba_hw.hw.mel import MelFilterbank
from nanomamba_hw.hw.sim_util import run_sim, stream_get_n, stream_put_all

FB = fmel.SparseFilterbank.build()
MAG_MAX = (1 << stft.MAG_FMT.bits) - 1


def frame_payloads(x: np.ndarray) -> list[dict]:
    """(n, T) values → frame-stream payloads, frame after frame."""
    n, T = x.shape
    return [{"data": int(x[j, t]), "first": int(j == 0), "last": int(j == n - 1)}
            for t in range(T) for j in range(n)]


def run_mel(mag: np.ndarray, stall: float = 0.3, seed: int = 0) -> np.ndarray:
    """(257, T) magnitudes through the hardware → (40, T) mel values; checks first/last."""
    dut = MelFilterbank(fb=FB)
    T = mag.shape[1]
    got = []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, frame_payloads(mag), stall=stall, rng=random.Random(seed))

    async def drain(ctx):
        got.extend(await stream_get_n(ctx, dut.o, 40 * T, stall=stall, rng=random.Random(seed + 1)))

    run_sim(dut, [feed, drain], deadline=1.0)
    assert [g["first"] for g in got] == [int(i % 40 == 0) for i in range(40 * T)]
    assert [g["last"] for g in got] == [int(i % 40 == 39) for i in range(40 * T)]
    return np.array([g["data"] for g in got], dtype=np.int64).reshape(T, 40).T


def test_mel_random_and_extremes():
    rng = np.random.default_rng(0)
    cols = [
        rng.integers(0, MAG_MAX + 1, 257),                    # random full range (saturates)
        np.full(257, MAG_MAX),                                # full scale everywhere
        np.zeros(257, dtype=np.int64),                        # digital silence
        np.where(np.arange(257) == 100, MAG_MAX, 0),          # a single loud bin
        rng.integers(0, 1 << 12, 257),                        # quiet
        rng.integers(0, 1 << 22, 257) >> rng.integers(0, 22, 257),   # wide dynamic range
    ]
    mag = np.stack(cols, axis=1)
    exp = fmel.mel_spectrum(FB, mag[None])[0]
    assert (exp == fmel.MEL_FMT.max_int).any(), "the test should reach saturation"
    np.testing.assert_array_equal(run_mel(mag), exp)


def test_mel_real_frames(seed_clip):
    mags = [stft.stft_magnitude(load_clip(seed_clip(w)).pcm[None])[0] for w in ("yes", "stop")]
    mag = np.concatenate([mags[0][:, 30:34], mags[1][:, 0:2]], axis=1)
    np.testing.assert_array_equal(run_mel(mag, seed=3), fmel.mel_spectrum(FB, mag[None])[0])


def test_mel_resynchronises_on_first():
    """A partial frame followed by a whole one (``first`` set): only the whole one counts."""
    rng = np.random.default_rng(1)
    mag = rng.integers(0, 1 << 20, (257, 1))
    dut = MelFilterbank(fb=FB)
    partial = [{"data": 7, "first": int(j == 0), "last": 0} for j in range(100)]
    got = []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, partial + frame_payloads(mag))

    async def drain(ctx):
        got.extend(await stream_get_n(ctx, dut.o, 40))

    run_sim(dut, [feed, drain], deadline=1.0)
    np.testing.assert_array_equal([g["data"] for g in got],
                                  fmel.mel_spectrum(FB, mag[None])[0, :, 0])


def measure_frame_cycles(dut, frame: list[dict], n_frames: int, n_out: int) -> list[int]:
    """Feed ``n_frames`` copies of ``frame`` with no stalls; cycles at which each output frame
    ends (``last`` accepted)."""
    ends = []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, frame * n_frames)

    async def watch(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(ends) < n_frames:
            *_, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid and payload.last:
                ends.append(cycle)

    run_sim(dut, [feed, watch], deadline=1.0)
    return ends


def test_mel_cycles_per_frame():
    rng = np.random.default_rng(2)
    frame = frame_payloads(rng.integers(0, 1 << 20, (257, 1)))
    ends = measure_frame_cycles(MelFilterbank(fb=FB), frame, 4, 40)
    per_frame = np.diff(ends)
    print(f"\nMelFilterbank: {per_frame.tolist()} cycles per frame (first frame done at {ends[0]})")
    assert (per_frame <= 720).all()
