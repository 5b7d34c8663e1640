"""Framer in the Amaranth simulator: bit-exact with :func:`nanomamba_hw.fixed.stft.frames`
(reflect padding at both clip edges) on random and real clips, with random stalls on both
sides, back-to-back clips, clip lengths with one or two reflected end frames, and ``clip_start``
abandoning a clip in the middle of a frame."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from nanomamba_hw.fixed import stft as fstft
from nanomamba_hw.hw.framer import Framer
from nanomamba_hw.hw.sim_util import run_sim, stream_get_n, stream_put_all

AUDIO = Path(__file__).resolve().parents[3] / "shared" / "seed" / "audio"


def expected(pcm: np.ndarray) -> list[dict]:
    """The framer's output stream for one clip, from the fixed model."""
    fr = fstft.frames(np.asarray(pcm, dtype=np.int16))[0]
    out = []
    for row in fr:
        n = len(row)
        out += [{"data": int(v), "first": int(k == 0), "last": int(k == n - 1)}
                for k, v in enumerate(row)]
    return out


def random_clip(rng: np.random.Generator, n: int) -> np.ndarray:
    pcm = rng.integers(-32768, 32768, n).astype(np.int16)
    pcm[:3] = [-32768, 32767, 0]
    pcm[-3:] = [32767, -32768, -1]
    return pcm


def run_clips(dut: Framer, clips: list[np.ndarray], *, in_stall: float, out_stall: float,
              seed: int, max_stall: int = 4) -> None:
    want = [w for c in clips for w in expected(c)]

    async def producer(ctx):
        for c in clips:
            await stream_put_all(ctx, dut.i, [int(v) for v in c], stall=in_stall,
                                 max_stall=max_stall, rng=random.Random(seed))

    async def consumer(ctx):
        got = []
        per_clip = len(want) // len(clips)
        for k in range(len(clips)):
            got += await stream_get_n(ctx, dut.o, per_clip, stall=out_stall,
                                      max_stall=max_stall, rng=random.Random(seed + 1 + k))
        assert len(got) == len(want)
        for j, (g, w) in enumerate(zip(got, want)):
            if g != w:
                t, e = divmod(j % per_clip, fstft.N_FFT)
                raise AssertionError(f"element {j} (clip {j // per_clip}, frame {t}, "
                                     f"sample {e}): got {g}, want {w}")
        # everything is consumed: the framer is idle again
        assert ctx.get(dut.busy) == 0

    n_out = len(want)
    deadline = (n_out * (1 + out_stall * max_stall) + sum(map(len, clips)) *
                (1 + in_stall * max_stall) + 1000) * 1e-6 * 2
    run_sim(dut, [producer, consumer], deadline=deadline)


@pytest.mark.parametrize("n, in_stall, out_stall", [
    (1600, 0.3, 0.3),      # 11 frames, frames 9 and 10 reflected at the end
    (1600, 0.0, 0.6),      # input faster than output: the buffer fills, input is held off
    (1600, 0.9, 0.0),      # output starved by a slow input
])
def test_short_clip_bit_exact(n, in_stall, out_stall):
    rng = np.random.default_rng(n + int(10 * in_stall))
    run_clips(Framer(clip_samples=n), [random_clip(rng, n)], in_stall=in_stall,
              out_stall=out_stall, seed=n)


@pytest.mark.parametrize("n", [257, 300, 1000, 1700, 2079])
def test_clip_lengths_and_back_to_back(n):
    """Remainders mod 160 with one (1700: r = 100) or two reflected end frames, the shortest
    clip reflect padding allows (257), and a second clip starting right after the first."""
    rng = np.random.default_rng(n)
    run_clips(Framer(clip_samples=n), [random_clip(rng, n), random_clip(rng, n)],
              in_stall=0.2, out_stall=0.2, seed=n)


def test_clip_start_mid_frame():
    """clip_start while frame 2 of clip A is half emitted (valid high, consumer stalled):
    A's partial output is a prefix of A's frames, then clip B comes out complete and exact."""
    n = 1600
    rng = np.random.default_rng(7)
    clip_a, clip_b = random_clip(rng, n), random_clip(rng, n)
    want_a, want_b = expected(clip_a), expected(clip_b)
    dut = Framer(clip_samples=n)
    n_a_samples = 700            # frames 0–2 of A become ready (frame 3 needs sample 735)
    n_a_take = 2 * 512 + 300     # take part of frame 2, then stall
    flags = {"paused": False, "restarted": False}

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, [int(v) for v in clip_a[:n_a_samples]], stall=0.3,
                             rng=random.Random(1))
        while not flags["paused"]:
            await ctx.tick()
        await ctx.tick().repeat(5)
        assert ctx.get(dut.o.valid) == 1 and ctx.get(dut.busy) == 1
        ctx.set(dut.clip_start, 1)
        await ctx.tick()
        ctx.set(dut.clip_start, 0)
        assert ctx.get(dut.o.valid) == 0 and ctx.get(dut.busy) == 0
        flags["restarted"] = True
        await stream_put_all(ctx, dut.i, [int(v) for v in clip_b], stall=0.3,
                             rng=random.Random(2))

    async def consumer(ctx):
        got_a = await stream_get_n(ctx, dut.o, n_a_take, stall=0.3, rng=random.Random(3))
        assert got_a == want_a[:n_a_take]
        flags["paused"] = True
        while not flags["restarted"]:
            await ctx.tick()
        got_b = await stream_get_n(ctx, dut.o, len(want_b), stall=0.3, rng=random.Random(4))
        assert got_b == want_b

    run_sim(dut, [producer, consumer], deadline=0.2)


def last_needed(t: int, n: int) -> int:
    """Largest sample index frame t of an n-sample clip reads (from the fixed model's frames)."""
    idx = fstft.frames(np.arange(n, dtype=np.int64))[0][t]
    return int(idx.max())


@pytest.mark.parametrize("n", [1600, 1700])
def test_frames_wait_for_their_last_sample(n):
    """Frame t is offered exactly when its last needed sample has been accepted: with one
    sample missing nothing more comes out (and the input is not held off); one sample later
    frame t follows. Frame 0 needs sample 256; the end frames need the clip's last sample."""
    pcm = random_clip(np.random.default_rng(n), n)
    want = expected(pcm)
    dut = Framer(clip_samples=n)
    T = fstft.n_frames(n)
    needs = [last_needed(t, n) for t in range(T)]
    assert needs[0] == 256 and needs[-1] == n - 1
    got = []

    async def tb(ctx):
        sent = 0
        for t in range(T):
            if needs[t] + 1 <= sent:
                continue        # already available (end frames share the last sample)
            await stream_put_all(ctx, dut.i, [int(v) for v in pcm[sent:needs[t]]])
            sent = needs[t]
            # one sample short of frame t: everything before it comes out, then silence
            ctx.set(dut.o.ready, 1)
            for _ in range(T * 512):
                _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
                if valid:
                    got.append({"data": payload.data, "first": payload.first,
                                "last": payload.last})
                if len(got) == t * 512:
                    break
            await ctx.tick().repeat(20)
            assert ctx.get(dut.o.valid) == 0, f"frame {t} offered before sample {needs[t]}"
            assert ctx.get(dut.i.ready) == 1
            ctx.set(dut.o.ready, 0)
            await stream_put_all(ctx, dut.i, [int(pcm[sent])])
            sent += 1
            await ctx.tick().repeat(3)
            assert ctx.get(dut.o.valid) == 1 and ctx.get(dut.o.payload.first) == 1
        got.extend(await stream_get_n(ctx, dut.o, len(want) - len(got)))
        assert got == want

    run_sim(dut, [tb], deadline=0.2)


@pytest.mark.parametrize("n", [1600, pytest.param(16000, marks=pytest.mark.slow)])
def test_throughput_no_stalls(n):
    """One element per cycle: a clip of L samples fed at full rate is out after T·512 cycles
    plus the wait for frame 0 (257 samples) and the read latency (51,970 cycles for 16,000)."""
    dut = Framer(clip_samples=n)
    pcm = random_clip(np.random.default_rng(3), n)
    want = expected(pcm)
    cycles = {}

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, [int(v) for v in pcm])

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        got, c, done_at = [], 0, []
        async for _, _, valid, payload, done in ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                                  dut.clip_done):
            c += 1
            if done:
                done_at.append(len(got))
            if valid:
                got.append({"data": payload.data, "first": payload.first,
                            "last": payload.last})
                if len(got) == len(want):
                    break
        cycles["total"] = c
        assert got == want
        assert done_at == [len(want) - 1]     # clip_done only with the clip's last element

    run_sim(dut, [producer, consumer], deadline=0.1)
    print(f"\nFramer, {n} samples, no stalls: {cycles['total']} cycles for {len(want)} elements")
    assert cycles["total"] == len(want) + 257 + 1, cycles


def _seed_clip():
    wavs = sorted(AUDIO.glob("*.wav"))
    if not wavs:
        pytest.skip(f"no seed audio at {AUDIO} (../shared beside the repo)")
    from nanomamba_hw.audio import load_clip
    return wavs[0], load_clip(wavs[0]).pcm


def test_real_clip_full():
    """A whole 16,000-sample seed clip, 101 frames, stalls on both sides."""
    _, pcm = _seed_clip()
    assert len(pcm) == 16000
    run_clips(Framer(), [pcm], in_stall=0.2, out_stall=0.2, seed=11)


@pytest.mark.slow
def test_real_clips_all_heavy_stalls():
    wavs = sorted(AUDIO.glob("*.wav"))
    if not wavs:
        pytest.skip(f"no seed audio at {AUDIO}")
    from nanomamba_hw.audio import load_clip
    clips = [load_clip(w).pcm for w in wavs]
    run_clips(Framer(), clips, in_stall=0.5, out_stall=0.5, seed=5, max_stall=8)


@pytest.mark.parametrize("kw", [{"clip_samples": 256}, {"n_fft": 500}, {"hop": 0}])
def test_bad_parameters(kw):
    with pytest.raises(ValueError):
        Framer(**kw)
