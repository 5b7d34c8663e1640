"""STFT (window → FFT → magnitude) in the Amaranth simulator, bit-exact with
:mod:`nanomamba_hw.fixed.stft` on random full-scale frames, extreme frames and frames of a real
clip, with backpressure; plus the cycle budget, the overflow flag and the input resync."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest

from nanomamba_hw.fixed import stft as fstft
from nanomamba_hw.hw.framer import Framer
from nanomamba_hw.hw.sim_util import run_sim, stream_get_n, stream_put_all
from nanomamba_hw.hw.stft import DEPTH, RAD_LATENCY, STAGE_CYCLES, STFT

AUDIO = Path(__file__).resolve().parents[3] / "shared" / "seed" / "audio"
N, NB, LOG2_N, MAG_FMT = fstft.N_FFT, fstft.N_BINS, fstft.LOG2_N, fstft.MAG_FMT


def golden(frames: np.ndarray) -> np.ndarray:
    """(F, 512) int16 frames → (F, 257) magnitudes, by the fixed model."""
    re, im = fstft.fft(fstft.apply_window(np.asarray(frames, dtype=np.int64)))
    return fstft.magnitude(re, im)


def frame_payloads(frames) -> list[dict]:
    return [{"data": int(v), "first": int(k == 0), "last": int(k == N - 1)}
            for fr in frames for k, v in enumerate(fr)]


def extreme_frames() -> np.ndarray:
    n = np.arange(N)
    imp = np.zeros(N, np.int64)
    imp[0] = 32767
    imp2 = np.zeros(N, np.int64)
    imp2[256] = -32768                           # at the window's peak (w = 1.0)
    return np.stack([
        np.full(N, -32768),                      # largest DC
        np.where(n % 2, -32768, 32767),          # largest Nyquist
        imp, imp2,                               # single impulses
        np.zeros(N, np.int64),
        np.full(N, 32767),
        np.round(32767 * np.cos(2 * np.pi * 37 * n / N)).astype(np.int64),   # on-bin tone
        np.where((n // 4) % 2, 32767, -32768),   # square wave, bin 64 and harmonics
    ])


def random_frames(rng: np.random.Generator, k: int) -> np.ndarray:
    return rng.integers(-32768, 32768, (k, N))


def run_stft(frames: np.ndarray, *, in_stall=0.0, out_stall=0.0, seed=0, dut=None,
             max_stall=4, stats=None):
    dut = dut or STFT()
    frames = np.asarray(frames)
    want = golden(frames)
    got_all = []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, frame_payloads(frames), stall=in_stall,
                             max_stall=max_stall, rng=random.Random(seed))

    async def consumer(ctx):
        for f in range(len(frames)):
            got = await stream_get_n(ctx, dut.o, NB, stall=out_stall, max_stall=max_stall,
                                     rng=random.Random(seed + 1 + f))
            got_all.append(got)
            assert [g["first"] for g in got] == [1] + [0] * (NB - 1)
            assert [g["last"] for g in got] == [0] * (NB - 1) + [1]
            data = np.array([g["data"] for g in got])
            bad = np.flatnonzero(data != want[f])
            assert not bad.size, (f"frame {f}: {bad.size} bins differ, first bin {bad[0]}: "
                                  f"got {data[bad[0]]}, want {want[f][bad[0]]}")
        assert ctx.get(dut.overflow) == 0

    per_frame = 10_000 + N * (1 + in_stall * max_stall) + NB * (out_stall * max_stall)
    run_sim(dut, [producer, consumer], deadline=(len(frames) + 2) * per_frame * 2e-6)
    return got_all


def test_random_full_scale_frames_with_stalls():
    rng = np.random.default_rng(1)
    run_stft(random_frames(rng, 3), in_stall=0.3, out_stall=0.3, seed=1)


def test_extreme_frames():
    run_stft(extreme_frames(), seed=2)


@pytest.mark.parametrize("sqrt_bits", [1, 3])
def test_sqrt_bits_per_cycle_variants(sqrt_bits):
    rng = np.random.default_rng(10 + sqrt_bits)
    frames = np.concatenate([random_frames(rng, 1), extreme_frames()[:1]])
    run_stft(frames, out_stall=0.5, seed=sqrt_bits, dut=STFT(sqrt_bits_per_cycle=sqrt_bits))


def test_truncated_frame_is_dropped():
    """A frame cut short (e.g. by the framer's clip_start) is overwritten by the next frame:
    the loader restarts at element 0 on every ``first``."""
    rng = np.random.default_rng(4)
    fr = random_frames(rng, 2)
    dut = STFT()
    want = golden(fr[1:])[0]

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, frame_payloads(fr[:1])[:300], stall=0.2)
        await stream_put_all(ctx, dut.i, frame_payloads(fr[1:]), stall=0.2)

    async def consumer(ctx):
        got = await stream_get_n(ctx, dut.o, NB)
        assert [g["data"] for g in got] == list(map(int, want))
        await ctx.tick().repeat(20000)           # nothing else comes out
        assert ctx.get(dut.o.valid) == 0 and ctx.get(dut.busy) == 0

    run_sim(dut, [producer, consumer], deadline=0.1)


def measure_cycles(n_frames: int = 3, **kw) -> dict:
    """Feed frames back to back with no stalls on either side; return the latency of frame 0
    (first input accepted → last magnitude transferred) and the period between frames."""
    dut = STFT(**kw)
    frames = random_frames(np.random.default_rng(0), n_frames)
    want = golden(frames)
    res = {}

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, frame_payloads(frames))

    async def monitor(ctx):
        ctx.set(dut.o.ready, 1)
        cycle, first_in, last_out, got = 0, None, [], []
        async for _, _, iv, ir, ov, payload in ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.o.valid, dut.o.payload):
            if iv and ir and first_in is None:
                first_in = cycle
            if ov:
                got.append(payload.data)
                if payload.last:
                    last_out.append(cycle)
                    if len(last_out) == n_frames:
                        break
            cycle += 1
        assert got == [int(v) for v in want.ravel()]
        res["latency"] = last_out[0] - first_in + 1
        res["period"] = [b - a for a, b in itertools.pairwise(last_out)]

    run_sim(dut, [producer, monitor], deadline=(n_frames + 1) * 12_000e-6)
    return res


def test_cycles_per_frame():
    """The schedule of ``hw/stft.py``'s docstring, exactly, no stalls on either side:
    load = 256 (first half, a sample per cycle) + (DEPTH + 1) + 511 (second half, a sample every
    2 cycles) + (DEPTH + 1) = 789; FFT = 8 stages × STAGE_CYCLES = 4,160; bins 0…256 issued
    ``bin_cycles`` apart: 256 × 9 = 2,304; the last magnitude leaves RAD_LATENCY + 1 +
    sqrt_cycles + 2 = 19 cycles after its bin's issue (latency 7,272); back to back the next
    load starts DEPTH + 2 cycles after the last bin's issue (period 7,265). Real time at
    16 MHz allows 160,000 cycles per hop."""
    res = measure_cycles(3)
    print(f"\nSTFT cycles: latency {res['latency']}, period {res['period']}")
    dut = STFT()
    dut._MustUse__silence = True                  # built only for its schedule constants
    half = N // 2
    load = half + (DEPTH + 1) + (2 * half - 1) + (DEPTH + 1)
    fft = (LOG2_N - 1) * STAGE_CYCLES
    bins = (NB - 1) * dut.bin_cycles
    latency = load + fft + bins + RAD_LATENCY + 1 + dut.sqrt_cycles + 2
    period = load + fft + bins + DEPTH + 2
    assert (load, fft, dut.bin_cycles, latency, period) == (789, 4160, 9, 7272, 7265), \
        "the docstrings state these numbers: update them with the schedule"
    assert res["latency"] == latency
    assert res["period"] == [period] * 2
    assert res["latency"] < 160_000 // 10             # a tenth of the real-time budget


def _seed_wavs():
    wavs = sorted(AUDIO.glob("*.wav"))
    if not wavs:
        pytest.skip(f"no seed audio at {AUDIO} (../shared beside the repo)")
    return wavs


def test_real_clip_frames():
    """Frames 0 (reflected left edge), the loudest frame and 100 (reflected right edge) of a
    seed clip."""
    from nanomamba_hw.audio import load_clip
    pcm = load_clip(_seed_wavs()[0]).pcm
    fr = fstft.frames(pcm)[0]
    loud = int(np.argmax(np.abs(fr).max(axis=1)))
    run_stft(fr[[0, loud, 100]], in_stall=0.2, out_stall=0.2, seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("k", range(4))
def test_random_frames_many(k):
    rng = np.random.default_rng(100 + k)
    # full scale, and quieter frames whose values exercise the low bits of the root
    fr = np.concatenate([random_frames(rng, 6),
                         rng.integers(-300, 300, (3, N)), rng.integers(-3, 4, (3, N))])
    run_stft(fr, in_stall=0.3, out_stall=0.3, seed=k)


@pytest.mark.slow
def test_real_clip_all_frames():
    from nanomamba_hw.audio import load_clip
    pcm = load_clip(_seed_wavs()[-1]).pcm
    run_stft(fstft.frames(pcm)[0], in_stall=0.1, out_stall=0.1, seed=6)


class _FrontEnd:
    """Framer → STFT, connected as the accelerator will connect them."""

    def __new__(cls, clip_samples):
        from amaranth.hdl import Module
        from amaranth.lib import wiring

        class FrontEnd(wiring.Component):
            def __init__(self):
                self.framer = Framer(clip_samples=clip_samples)
                self.stft = STFT()
                super().__init__({"i": wiring.In(self.framer.i.signature.flip()),
                                  "o": wiring.Out(self.stft.o.signature)})

            def elaborate(self, platform):
                m = Module()
                m.submodules.framer = self.framer
                m.submodules.stft = self.stft
                wiring.connect(m, self.framer.o, self.stft.i)
                wiring.connect(m, wiring.flipped(self.i), self.framer.i)
                wiring.connect(m, self.stft.o, wiring.flipped(self.o))
                return m

        return FrontEnd()


def test_framer_into_stft():
    """A 1,000-sample clip (7 frames, both edges reflected) through Framer → STFT equals
    ``fixed.stft.stft_magnitude``."""
    n = 1000
    pcm = np.random.default_rng(8).integers(-32768, 32768, n).astype(np.int16)
    want = fstft.stft_magnitude(pcm)[0].T            # (T, 257)
    dut = _FrontEnd(n)

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, [int(v) for v in pcm], stall=0.3)

    async def consumer(ctx):
        got = await stream_get_n(ctx, dut.o, want.size, stall=0.2)
        assert [g["data"] for g in got] == [int(v) for v in want.ravel()]

    run_sim(dut, [producer, consumer], deadline=len(want) * 12_000e-6 + 0.01)


@pytest.mark.parametrize("kw", [{"butterflies": 2}, {"sqrt_bits_per_cycle": 5},
                                {"sqrt_bits_per_cycle": 0}])
def test_bad_parameters(kw):
    with pytest.raises(ValueError):
        STFT(**kw)
