"""Feature buffer in the Amaranth simulator: storage, exact Σx/Σx², banks, release, clip_start."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from nanomamba_hw.fixed.frontend import FEAT_FMTS
from nanomamba_hw.fixed.snr import SNR_FMT
from nanomamba_hw.hw.featbuf import FeatureBuffer, FeatureStreamer, stat_widths
from nanomamba_hw.hw.sim_util import run_sim, stream_get_n, stream_put_all

N_MELS = 40


def payloads(x: np.ndarray) -> list[dict]:
    """(40, T) → frame-stream payloads, frame after frame."""
    n, T = x.shape
    return [{"data": int(x[j, t]), "first": int(j == 0), "last": int(j == n - 1)}
            for t in range(T) for j in range(n)]


async def read_clip(ctx, rd, T: int, n: int = N_MELS, *, release: bool = True):
    """Wait for ``rd.full``, read every (t, m) — one read per cycle, the data of the address
    set before a clock edge is there after it — with the band statistics, then pulse
    ``release``. Returns (feat (n, T), snr (n, T), sum (n,), sq (n,))."""
    while not ctx.get(rd.full):
        await ctx.tick()
    feat, snr = np.zeros((n, T), np.int64), np.zeros((n, T), np.int64)
    s1, s2 = np.zeros(n, np.int64), np.zeros(n, np.int64)
    ctx.set(rd.en, 1)
    for t in range(T):
        for m in range(n):
            ctx.set(rd.t, t)
            ctx.set(rd.m, m)
            await ctx.tick()
            feat[m, t], snr[m, t] = ctx.get(rd.feat), ctx.get(rd.snr)
            s1[m], s2[m] = ctx.get(rd.sum), ctx.get(rd.sq)
    ctx.set(rd.en, 0)
    await ctx.tick()
    assert ctx.get(rd.feat) == feat[n - 1, T - 1], "data must hold while en is low"
    if release:
        ctx.set(rd.release, 1)
        await ctx.tick()
        ctx.set(rd.release, 0)
    return feat, snr, s1, s2


def check(got, feat, snr):
    f, s, s1, s2 = got
    np.testing.assert_array_equal(f, feat)
    np.testing.assert_array_equal(s, snr)
    np.testing.assert_array_equal(s1, feat.sum(axis=1))
    np.testing.assert_array_equal(s2, (feat * feat).sum(axis=1))


def random_clip(rng, fmt, T):
    feat = rng.integers(fmt.min_int, fmt.max_int + 1, (N_MELS, T))
    feat[0, :] = fmt.min_int                      # the bound of Σx² is reached by min_int
    feat[1, :] = fmt.max_int
    snr = rng.integers(0, SNR_FMT.max_int + 1, (N_MELS, T))
    return feat, snr


def test_stat_widths_hold_the_bound():
    fmt = FEAT_FMTS["logmel"]
    sw, qw = stat_widths(fmt, 101)
    assert -(1 << (sw - 1)) <= 101 * fmt.min_int and 101 * fmt.max_int < (1 << (sw - 1))
    assert 101 * fmt.min_int ** 2 < (1 << qw)


@pytest.mark.parametrize("kind", ["logmel", "dualpcen"])
def test_two_banks_fill_then_block_until_release(kind):
    """Two clips fill both banks without a release; a third clip is held off until the first
    is released; all three read back exactly (with random stalls on the writers)."""
    fmt = FEAT_FMTS[kind]
    T = 3
    rng = np.random.default_rng(0)
    clips = [random_clip(rng, fmt, T) for _ in range(3)]
    dut = FeatureBuffer(feat_fmt=fmt, n_frames=T, n_mels=N_MELS, n_banks=2)
    got = []
    fed = {}

    async def feed_feat(ctx):
        await stream_put_all(ctx, dut.i_feat, [v for c in clips for v in payloads(c[0])],
                             stall=0.3, rng=random.Random(1))
        fed["feat"] = True

    async def feed_snr(ctx):
        await stream_put_all(ctx, dut.i_snr, [v for c in clips for v in payloads(c[1])],
                             stall=0.5, rng=random.Random(2))

    async def reader(ctx):
        await ctx.tick().repeat(3000)            # long enough to deliver two clips
        assert ctx.get(dut.rd.full) and "feat" not in fed
        for _ in range(20):                      # both banks full: both writers held off
            assert not ctx.get(dut.i_feat.ready) and not ctx.get(dut.i_snr.ready)
            await ctx.tick()
        for _ in range(3):
            got.append(await read_clip(ctx, dut.rd, T))

    run_sim(dut, [feed_feat, feed_snr, reader], deadline=1.0)
    assert len(got) == len(clips)
    for g, (feat, snr) in zip(got, clips):
        check(g, feat, snr)


def test_one_bank_waits_for_release():
    fmt = FEAT_FMTS["dualpcen"]
    T = 2
    rng = np.random.default_rng(3)
    clips = [random_clip(rng, fmt, T) for _ in range(2)]
    dut = FeatureBuffer(feat_fmt=fmt, n_frames=T, n_mels=N_MELS, n_banks=1)
    got = []

    async def feed_feat(ctx):
        await stream_put_all(ctx, dut.i_feat, payloads(clips[0][0]) + payloads(clips[1][0]))

    async def feed_snr(ctx):
        await stream_put_all(ctx, dut.i_snr, payloads(clips[0][1]) + payloads(clips[1][1]))

    async def reader(ctx):
        while not ctx.get(dut.rd.full):
            await ctx.tick()
        for _ in range(10):
            await ctx.tick()
            assert not ctx.get(dut.i_feat.ready) and not ctx.get(dut.i_snr.ready)
        got.append(await read_clip(ctx, dut.rd, T))
        got.append(await read_clip(ctx, dut.rd, T))

    run_sim(dut, [feed_feat, feed_snr, reader], deadline=1.0)
    assert len(got) == len(clips)
    for g, (feat, snr) in zip(got, clips):
        check(g, feat, snr)


def test_clip_start_drops_partial_clip():
    """Half a clip, ``clip_start``, then a whole clip: only the whole clip is stored and its
    statistics do not include the abandoned values."""
    fmt = FEAT_FMTS["logmel"]
    T = 3
    rng = np.random.default_rng(4)
    junk = random_clip(rng, fmt, T)
    feat, snr = random_clip(rng, fmt, T)
    dut = FeatureBuffer(feat_fmt=fmt, n_frames=T, n_mels=N_MELS)
    got = []

    async def tb(ctx):
        await stream_put_all(ctx, dut.i_feat, payloads(junk[0])[:70])
        await stream_put_all(ctx, dut.i_snr, payloads(junk[1])[:20])
        ctx.set(dut.clip_start, 1)
        await ctx.tick()
        ctx.set(dut.clip_start, 0)
        await stream_put_all(ctx, dut.i_feat, payloads(feat))
        assert not ctx.get(dut.rd.full)
        await stream_put_all(ctx, dut.i_snr, payloads(snr))
        got.append(await read_clip(ctx, dut.rd, T))

    run_sim(dut, [tb], deadline=1.0)
    check(got[0], feat, snr)


def test_streamer_reads_clips_out_as_streams():
    """FeatureBuffer + FeatureStreamer: stats, then feat/snr frames (consumers stalling
    independently), then release; two clips back to back."""
    fmt = FEAT_FMTS["logmel"]
    T = 2
    rng = np.random.default_rng(5)
    clips = [random_clip(rng, fmt, T) for _ in range(2)]
    buf = FeatureBuffer(feat_fmt=fmt, n_frames=T, n_mels=N_MELS)
    st = FeatureStreamer(feat_fmt=fmt, n_frames=T, n_mels=N_MELS)

    class Top(wiring.Component):
        def __init__(self):
            super().__init__({})

        def elaborate(self, platform):
            m = Module()
            m.submodules.buf, m.submodules.st = buf, st
            wiring.connect(m, st.rd, buf.rd)
            return m

    got = {"stats": [], "feat": [], "snr": []}

    async def feed_feat(ctx):
        await stream_put_all(ctx, buf.i_feat, [v for c in clips for v in payloads(c[0])])

    async def feed_snr(ctx):
        await stream_put_all(ctx, buf.i_snr, [v for c in clips for v in payloads(c[1])])

    def taker(name: str, n: int, stall: float, seed: int):
        async def tb(ctx):
            got[name] = await stream_get_n(ctx, getattr(st, name), n, stall=stall,
                                           rng=random.Random(seed))
        return tb

    run_sim(Top(), [feed_feat, feed_snr, taker("stats", 2 * N_MELS, 0.3, 7),
                    taker("feat", 2 * T * N_MELS, 0.4, 8), taker("snr", 2 * T * N_MELS, 0.2, 9)],
            deadline=1.0)
    for c, (feat, snr) in enumerate(clips):
        s = got["stats"][c * N_MELS:(c + 1) * N_MELS]
        np.testing.assert_array_equal([v["s1"] for v in s], feat.sum(axis=1))
        np.testing.assert_array_equal([v["s2"] for v in s], (feat * feat).sum(axis=1))
        for name, ref in (("feat", feat), ("snr", snr)):
            vals = got[name][c * T * N_MELS:(c + 1) * T * N_MELS]
            np.testing.assert_array_equal([v["data"] for v in vals], ref.T.ravel())
            assert [v["first"] for v in vals] == [int(i % N_MELS == 0) for i in range(len(vals))]
            assert [v["last"] for v in vals] == [int(i % N_MELS == N_MELS - 1)
                                                 for i in range(len(vals))]
