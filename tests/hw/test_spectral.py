"""The whole spectral half (mel + SNR + front end + feature buffer) on real clips, bit-exact
with the fixed model's stages: features, SNR and the instance norm's Σx, Σx² per band."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nanomamba_hw.audio import load_clip
from nanomamba_hw.fixed import frontend as ffe
from nanomamba_hw.fixed import mel as fmel
from nanomamba_hw.fixed import snr as fsnr
from nanomamba_hw.fixed import stft
from nanomamba_hw.hw.sim_util import run_sim, stream_put_all
from nanomamba_hw.hw.spectral import Spectral

from .test_featbuf import read_clip

CLIP_WORDS = ("yes", "no", "up", "down", "go", "stop")
KINDS = {"logmel": "NanoMamba-Tiny", "dualpcen": "NanoMamba-Tiny-DualPCEN"}


@pytest.fixture(scope="module")
def fixed_params(published_ckpt, seed_clip):
    """Quantized artefacts of the published checkpoints, by front-end kind."""
    from nanomamba_hw.checkpoint import load_checkpoint
    from nanomamba_hw.fixed.model import quantize

    calib = np.stack([load_clip(seed_clip(w)).samples for w in CLIP_WORDS]).astype(np.float32)
    return {k: quantize(load_checkpoint(published_ckpt(name)), calib) for k, name in KINDS.items()}


def expected(p, mag: np.ndarray):
    """The fixed model's stage outputs for magnitudes (B, 257, T), as ``fixed.model.run``
    connects them."""
    fb = fmel.SparseFilterbank.build(p.config.n_mels, p.config.n_fft, p.config.sample_rate)
    snr = fsnr.snr_bands(p.snr, fb, mag)
    feat = ffe.features(p.frontend, fmel.mel_spectrum(fb, mag))
    return feat, snr


def mag_payloads(mag: np.ndarray) -> list[dict]:
    n, T = mag.shape
    return [{"data": int(mag[j, t]), "first": int(j == 0), "last": int(j == n - 1)}
            for t in range(T) for j in range(n)]


def check_clip(got, feat, snr):
    f, s, s1, s2 = got
    np.testing.assert_array_equal(s, snr)
    np.testing.assert_array_equal(f, feat)
    np.testing.assert_array_equal(s1, feat.sum(axis=-1))
    np.testing.assert_array_equal(s2, (feat * feat).sum(axis=-1))


def run_clips(p, mags: list[np.ndarray], *, stall: float = 0.1, n_banks: int = 2,
              restart_after: list | None = None, after_restart: list | None = None):
    """Feed clips (257, T) back to back (after ``restart_after`` magnitudes of junk, a
    ``clip_start`` and ``after_restart`` more junk, if given); read every clip back from the
    feature buffer. Returns the clips read and cycle counts: ``fed`` (first clip's last
    magnitude accepted), ``first_full`` (first clip complete in the buffer), from the first
    magnitude offered."""
    T = mags[0].shape[1]
    dut = Spectral(params=p, n_frames=T, n_banks=n_banks)
    got, info = [], {}

    async def feed(ctx):
        rng = random.Random(1)
        if restart_after:
            await stream_put_all(ctx, dut.i, restart_after, stall=stall, rng=rng)
            ctx.set(dut.clip_start, 1)
            await ctx.tick()
            ctx.set(dut.clip_start, 0)
            await stream_put_all(ctx, dut.i, after_restart or [], stall=stall, rng=rng)
        for mag in mags:
            await stream_put_all(ctx, dut.i, mag_payloads(mag), stall=stall, rng=rng)
            info.setdefault("fed", info["cycle"])

    async def reader(ctx):
        info["cycle"] = 0
        while not ctx.get(dut.rd.full):
            await ctx.tick()
            info["cycle"] += 1
        info["first_full"] = info["cycle"]
        for _ in mags:
            got.append(await read_clip(ctx, dut.rd, T))

    run_sim(dut, [feed, reader], deadline=2.0)
    return got, info


def real_mags(word: str, seed_clip) -> np.ndarray:
    return stft.stft_magnitude(load_clip(seed_clip(word)).pcm[None])[0]


@pytest.mark.parametrize("kind", ["logmel", "dualpcen"])
def test_spectral_short_clip(fixed_params, seed_clip, kind):
    """12 frames of a real clip (the fixed functions work on any T ≥ 5)."""
    p = fixed_params[kind]
    mag = real_mags("yes", seed_clip)[:, 28:40]
    feat, snr = expected(p, mag[None])
    got, _info = run_clips(p, [mag])
    check_clip(got[0], feat[0], snr[0])


def test_spectral_restart_and_back_to_back(fixed_params, seed_clip):
    """DualPCEN/EMA, one feature bank: a partial clip abandoned by ``clip_start`` in the middle
    of its third frame, the rest of that frame still arriving afterwards (as the STFT would
    deliver it: the engine must drop it up to the next ``first``), then two 6-frame clips back
    to back; the second waits for the release of the first."""
    p = fixed_params["dualpcen"]
    T = 6
    a, b = real_mags("go", seed_clip)[:, 30:30 + T], real_mags("no", seed_clip)[:, 40:40 + T]
    junk = mag_payloads(real_mags("up", seed_clip)[:, :3])
    got, _ = run_clips(p, [a, b], n_banks=1, restart_after=junk[:600], after_restart=junk[600:])
    for g, mag in zip(got, (a, b)):
        feat, snr = expected(p, mag[None])
        check_clip(g, feat[0], snr[0])


@pytest.mark.parametrize("kind", ["logmel", "dualpcen"])
def test_spectral_full_clip(fixed_params, seed_clip, kind):
    """All 101 frames of a real clip: features, SNR and statistics; the stage outputs equal
    the traced integers of ``fixed.model.run`` on the clip's PCM. (≈ 45 s of CPU each in the
    Amaranth simulator, so not marked slow.)"""
    from nanomamba_hw.fixed.model import run

    p = fixed_params[kind]
    pcm = load_clip(seed_clip("stop")).pcm
    mag = stft.stft_magnitude(pcm[None])[0]
    st = run(p, pcm, trace=True).stages
    got, info = run_clips(p, [mag], stall=0.0)
    check_clip(got[0], st["instnorm_in"][0], st["snr_mel"][0])
    print(f"\nSpectral[{kind}]: last magnitude accepted at cycle {info['fed']}, clip complete "
          f"in the buffer at cycle {info['first_full']} (no stalls)")
