"""Feature buffer in the Amaranth simulator: storage through the engine port (whole-word
writes, read-modify-write), feature codes, banks and release, a restarted clip.

The writer here drives the engine port the way :class:`~nanomamba_hw.hw.spectral.SpectralEngine`
does: a word's SNR value is written first with arbitrary feature bits, then the feature is
merged by read-modify-write (``re``, ``rdata`` the next cycle); ``done`` ends the clip, and a
clip starts only while ``wr_ok`` is high. Expected values are the written integers.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from nanomamba_hw.fixed.frontend import FEAT_FMTS
from nanomamba_hw.fixed.snr import SNR_FMT
from nanomamba_hw.hw.featbuf import FeatCode, FeatureBuffer
from nanomamba_hw.hw.sim_util import run_sim

N_MELS = 40


async def read_clip(ctx, rd, T: int, n: int = N_MELS, *, release: bool = True):
    """Wait for ``rd.full``, read every (t, m) — one read per cycle, the data of the address
    set before a clock edge is there after it — then pulse ``release``. Returns
    (feat (n, T), snr (n, T))."""
    while not ctx.get(rd.full):
        await ctx.tick()
    feat, snr = np.zeros((n, T), np.int64), np.zeros((n, T), np.int64)
    ctx.set(rd.en, 1)
    for t in range(T):
        for m in range(n):
            ctx.set(rd.t, t)
            ctx.set(rd.m, m)
            await ctx.tick()
            feat[m, t], snr[m, t] = ctx.get(rd.feat), ctx.get(rd.snr)
    ctx.set(rd.en, 0)
    await ctx.tick()
    assert ctx.get(rd.feat) == feat[n - 1, T - 1], "data must hold while en is low"
    if release:
        ctx.set(rd.release, 1)
        await ctx.tick()
        ctx.set(rd.release, 0)
    return feat, snr


def check(got, feat, snr):
    f, s = got
    np.testing.assert_array_equal(f, feat)
    np.testing.assert_array_equal(s, snr)


def random_clip(rng, fmt, T, lo=None, hi=None):
    """Features over [lo, hi] (default: the whole format) with both ends present; SNR values."""
    lo = fmt.min_int if lo is None else lo
    hi = fmt.max_int if hi is None else hi
    feat = rng.integers(lo, hi + 1, (N_MELS, T))
    feat[0, :] = lo
    feat[1, :] = hi
    snr = rng.integers(0, SNR_FMT.max_int + 1, (N_MELS, T))
    return feat, snr


def encode(code: FeatCode, x: int) -> int:
    return (int(x) - code.offset) & ((1 << code.bits) - 1)


async def write_clip(ctx, buf, code: FeatCode, feat, snr, *, frames=None, rng=None,
                     stall: float = 0.0, done: bool = True):
    """Write frames ``frames`` (default all) of a clip through the engine port, then ``done``.
    Waits for ``wr_ok`` before the clip's first write. Before each word, with probability
    ``stall``, 1–4 idle cycles. Checks every word read back by the read-modify-write."""
    rng = rng or random.Random(0)
    n, T = feat.shape
    while not ctx.get(buf.wr_ok):
        await ctx.tick()
    junk_mask = (1 << code.bits) - 1
    for t in (range(T) if frames is None else frames):
        for m in range(n):
            if stall and rng.random() < stall:
                await ctx.tick().repeat(rng.randint(1, 4))
            addr = t * n + m
            # the SNR value first, the feature bits arbitrary
            ctx.set(buf.addr, addr)
            ctx.set(buf.wdata, rng.getrandbits(code.bits) & junk_mask
                    | int(snr[m, t]) << code.bits)
            ctx.set(buf.we, 1)
            await ctx.tick()
            ctx.set(buf.we, 0)
            # read the word back, merge the feature
            ctx.set(buf.re, 1)
            await ctx.tick()
            ctx.set(buf.re, 0)
            word = ctx.get(buf.rdata)
            assert word >> code.bits == snr[m, t], "the engine port must read the word back"
            ctx.set(buf.wdata, encode(code, feat[m, t]) | (word >> code.bits) << code.bits)
            ctx.set(buf.we, 1)
            await ctx.tick()
            ctx.set(buf.we, 0)
    if done:
        ctx.set(buf.done, 1)
        await ctx.tick()
        ctx.set(buf.done, 0)


def logmel_code():
    from nanomamba_hw.fixed.frontend import FrontendParams
    from nanomamba_hw.hw.frontend import feature_code
    return feature_code(FrontendParams("logmel"))


def test_feat_code_for_range():
    """15 bits without offset for non-negative features, 15 bits with an offset (a multiple of
    2**12) for the log-mel range, the full format when the range does not fit."""
    fmt = FEAT_FMTS["logmel"]
    assert FeatCode.for_range(0, (1 << 15) - 1, fmt) == FeatCode(15)
    c = logmel_code()
    assert c.bits == 15 and c.offset < 0 and c.offset % (1 << 12) == 0
    assert FeatCode.for_range(fmt.min_int, fmt.max_int, fmt) == FeatCode.full(fmt)


@pytest.mark.parametrize("kind", ["logmel", "dualpcen"])
def test_two_banks_fill_then_block_until_release(kind):
    """Two clips fill both banks without a release; the writer is then held off (``wr_ok``
    low) and its third clip waits until the first is released; all three read back exactly
    (random idle cycles in the writer, features over the whole format, 16-bit code)."""
    fmt = FEAT_FMTS[kind]
    T = 3
    rng = np.random.default_rng(0)
    clips = [random_clip(rng, fmt, T) for _ in range(3)]
    code = FeatCode.full(fmt)
    dut = FeatureBuffer(feat_fmt=fmt, n_frames=T, n_mels=N_MELS, n_banks=2, code=code)
    got, events = [], []

    async def writer(ctx):
        r = random.Random(1)
        for k, (feat, snr) in enumerate(clips):
            await write_clip(ctx, dut, code, feat, snr, rng=r, stall=0.3)
            events.append(f"written {k}")

    async def reader(ctx):
        await ctx.tick().repeat(3000)            # long enough to write two clips
        assert ctx.get(dut.rd.full) and events == ["written 0", "written 1"]
        for _ in range(20):                      # both banks full: the writer is held off
            assert not ctx.get(dut.wr_ok)
            await ctx.tick()
        for _ in range(3):
            got.append(await read_clip(ctx, dut.rd, T))

    run_sim(dut, [writer, reader], deadline=1.0)
    assert len(got) == len(clips)
    for g, (feat, snr) in zip(got, clips):
        check(g, feat, snr)


def test_one_bank_waits_for_release():
    """One bank, the log-mel 15-bit code with its offset: the second clip cannot start until
    the first is released."""
    fmt = FEAT_FMTS["logmel"]
    code = logmel_code()
    T = 2
    rng = np.random.default_rng(3)
    lo, hi = code.offset, code.offset + (1 << code.bits) - 1
    clips = [random_clip(rng, fmt, T, lo, hi) for _ in range(2)]
    dut = FeatureBuffer(feat_fmt=fmt, n_frames=T, n_mels=N_MELS, n_banks=1, code=code)
    got, events = [], []

    async def writer(ctx):
        for k, (feat, snr) in enumerate(clips):
            await write_clip(ctx, dut, code, feat, snr)
            events.append(k)

    async def reader(ctx):
        while not ctx.get(dut.rd.full):
            await ctx.tick()
        for _ in range(200):
            await ctx.tick()
            assert not ctx.get(dut.wr_ok) and events == [0]
        got.append(await read_clip(ctx, dut.rd, T))
        got.append(await read_clip(ctx, dut.rd, T))

    run_sim(dut, [writer, reader], deadline=1.0)
    assert len(got) == len(clips)
    for g, (feat, snr) in zip(got, clips):
        check(g, feat, snr)


@pytest.mark.parametrize("n_banks", [1, 2])
def test_restarted_clip_drops_the_partial_one(n_banks):
    """What the engine does after ``clip_start``: frames 0–1 of a clip written, then the writer
    starts over at frame 0 with another clip. Only the second clip is stored; with two banks a
    complete clip waiting in the other bank is untouched."""
    fmt = FEAT_FMTS["dualpcen"]
    code = FeatCode.full(fmt)
    T = 3
    rng = np.random.default_rng(4)
    first, junk, clip = (random_clip(rng, fmt, T) for _ in range(3))
    dut = FeatureBuffer(feat_fmt=fmt, n_frames=T, n_mels=N_MELS, n_banks=n_banks, code=code)
    got = []

    async def writer(ctx):
        if n_banks == 2:
            await write_clip(ctx, dut, code, *first)
        await write_clip(ctx, dut, code, *junk, frames=range(2), done=False)
        assert not (n_banks == 1 and ctx.get(dut.rd.full))
        await write_clip(ctx, dut, code, *clip, stall=0.2)

    async def reader(ctx):
        if n_banks == 2:
            got.append(await read_clip(ctx, dut.rd, T))
        got.append(await read_clip(ctx, dut.rd, T))

    run_sim(dut, [writer, reader], deadline=1.0)
    want = [first, clip] if n_banks == 2 else [clip]
    assert len(got) == len(want)
    for g, (feat, snr) in zip(got, want):
        check(g, feat, snr)
