"""The whole accelerator in the Amaranth simulator: PCM in, decision out, bit-exact with the
fixed model (short clips here; full clips run on the emitted Verilog with Verilator)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from nanomamba_hw.fixed import model as fm
from nanomamba_hw.fixed.block import SSMRegisters
from nanomamba_hw.hw.accel_if import REG_BGATE_FLOOR, REG_EPS_MAX, REG_STATUS
from nanomamba_hw.hw.accelerator import Accelerator
from nanomamba_hw.hw.sim_util import run_sim, stream_get, stream_put_all

REPO = Path(__file__).resolve().parents[2]
ARTEFACT = REPO / "model" / "nanomamba-tiny-dualpcen.int8.json"


@pytest.fixture(scope="module")
def params():
    return fm.FixedParams.load(ARTEFACT)


def _clip(n, seed):
    """A tone burst in noise: speech-like level changes so every stage sees real work."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    env = np.clip(np.sin(np.pi * t / t[-1]) * 2, 0, 1)
    x = 0.3 * env * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + rng.normal(0, 0.01, n)
    return np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)


def _expected(params, pcm, regs=None):
    r = fm.run(params, pcm[None], registers=regs)
    return int(r.index[0]), [int(v) for v in r.logits[0]]


@pytest.mark.parametrize("n_banks", [1, 2])
def test_accelerator_short_clips_bit_exact(params, n_banks):
    """Two 6-frame clips back to back with random stalls, then a register write: each result
    equals the fixed model's integers for that clip (and those registers)."""
    n = 800                                       # 1 + 800 // 160 = 6 frames
    dut = Accelerator(params, clip_samples=n, n_banks=n_banks)
    clips = [_clip(n, 1), _clip(n, 2), _clip(n, 3)]
    regs = SSMRegisters(*params.registers.as_tuple()[:3], 30000, 40000)
    want = [_expected(params, clips[0]), _expected(params, clips[1]),
            _expected(params, clips[2], regs)]
    assert want[2] != _expected(params, clips[2])       # the registers matter for this clip
    got = []

    async def host(ctx):
        for i, c in enumerate(clips):
            if i == 2:   # write the registers before the third clip's back-end pass starts
                for addr, val in ((REG_EPS_MAX, 30000), (REG_BGATE_FLOOR, 40000)):
                    ctx.set(dut.reg_addr, addr)
                    ctx.set(dut.reg_wdata, val)
                    ctx.set(dut.reg_we, 1)
                    await ctx.tick()
                    ctx.set(dut.reg_we, 0)
            await stream_put_all(ctx, dut.pcm, [int(v) for v in c], stall=0.2,
                                 rng=random.Random(i))
            res = await stream_get(ctx, dut.result)
            got.append((res["index"], res["logits"], res["cycles"]))
            ctx.set(dut.reg_addr, REG_STATUS)

    run_sim(dut, [host], deadline=5.0)
    for (idx, logits, cycles), (w_idx, w_logits) in zip(got, want):
        assert logits == w_logits and idx == w_idx
        assert cycles > 0


def test_accelerator_clip_start_while_the_stft_computes(params):
    """700 samples of a clip, 2,000 cycles (the STFT has loaded frame 0 and is computing it),
    ``clip_start``, then a whole clip: the result is the fixed model's for that clip alone —
    no frame of the abandoned clip reaches it."""
    n = 800
    dut = Accelerator(params, clip_samples=n)
    junk, clip = _clip(n, 4), _clip(n, 5)
    want = _expected(params, clip)
    got = []

    async def host(ctx):
        await stream_put_all(ctx, dut.pcm, [int(v) for v in junk[:700]])
        await ctx.tick().repeat(2000)
        ctx.set(dut.clip_start, 1)
        await ctx.tick()
        ctx.set(dut.clip_start, 0)
        await stream_put_all(ctx, dut.pcm, [int(v) for v in clip], stall=0.2,
                             rng=random.Random(7))
        res = await stream_get(ctx, dut.result)
        got.append((res["index"], res["logits"]))

    run_sim(dut, [host], deadline=5.0)
    assert got == [(want[0], want[1])]
