"""Front ends in the Amaranth simulator: LogMel and DualPCEN, bit-exact with ``fixed.frontend``."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from nanomamba_hw.audio import load_clip
from nanomamba_hw.fixed import frontend as ffe
from nanomamba_hw.fixed import mel as fmel
from nanomamba_hw.fixed import stft
from nanomamba_hw.hw.frontend import DualPCEN, LogMel, make_frontend
from nanomamba_hw.hw.sim_util import run_sim, stream_get_n, stream_put_all

FB = fmel.SparseFilterbank.build()
MEL_MAX = fmel.MEL_FMT.max_int


def clip_payloads(x: np.ndarray) -> list[dict]:
    C, n, T = x.shape
    return [{"data": int(x[c, j, t]), "first": int(j == 0), "last": int(j == n - 1)}
            for c in range(C) for t in range(T) for j in range(n)]


def run_fe(dut, mel: np.ndarray, stall: float = 0.3, seed: int = 0) -> np.ndarray:
    """Clips (C, 40, T) of mel values back to back → (C, 40, T) features."""
    C, n, T = mel.shape
    got = []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, clip_payloads(mel), stall=stall, rng=random.Random(seed))

    async def drain(ctx):
        got.extend(await stream_get_n(ctx, dut.o, C * T * n, stall=stall,
                                      rng=random.Random(seed + 1)))

    run_sim(dut, [feed, drain], deadline=1.0)
    assert [g["first"] for g in got] == [int(i % n == 0) for i in range(len(got))]
    assert [g["last"] for g in got] == [int(i % n == n - 1) for i in range(len(got))]
    return np.array([g["data"] for g in got], dtype=np.int64).reshape(C, T, n).transpose(0, 2, 1)


def real_mel(words, t0: int, T: int, seed_clip) -> np.ndarray:
    pcm = np.stack([load_clip(seed_clip(w)).pcm for w in words])
    return fmel.mel_spectrum(FB, stft.stft_magnitude(pcm)[..., t0:t0 + T])


def random_mel(rng, C: int, T: int) -> np.ndarray:
    """Mel values over the whole u28 range with extremes: zeros, full scale, one loud band."""
    x = rng.integers(0, 1 << 28, (C, 40, T)) >> rng.integers(0, 28, (C, 40, T))
    x[0, :, 0] = 0
    x[0, :, 1] = MEL_MAX
    x[0, :, 2] = np.where(np.arange(40) == 17, MEL_MAX, 0)
    x[-1, :, -1] = 1
    return x


# ---------------------------------------------------------------------------------------- LogMel

def test_logmel_random_and_extremes():
    mel = random_mel(np.random.default_rng(0), 1, 6)
    np.testing.assert_array_equal(run_fe(LogMel(), mel), ffe.log_mel(mel))


def test_logmel_real_frames(seed_clip):
    mel = real_mel(("yes", "stop"), 35, 3, seed_clip)
    np.testing.assert_array_equal(run_fe(LogMel(), mel, seed=2), ffe.log_mel(mel))


# -------------------------------------------------------------------------------------- DualPCEN

def synthetic_params(routing: str, seed: int) -> ffe.FrontendParams:
    """DualPCEN constants without a checkpoint: the float model's clamp ranges, drawn at random
    (each expert's s, α, δ, r anywhere in its clamp interval)."""
    rng = np.random.default_rng(seed)
    m = np.arange(40)
    floor = fmel.MEL_FMT.quantize(0.05 * np.exp(-3 * m / 39))

    def expert(dlo, dhi):
        return ffe.PCENParams.from_float(rng.uniform(0.05, 0.30, 40), rng.uniform(0.9, 0.999, 40),
                                         np.exp(rng.uniform(np.log(dlo), np.log(dhi), 40)),
                                         rng.uniform(0.05, 0.25, 40))

    return ffe.FrontendParams("dualpcen", routing, floor, expert(0.001, 0.1), expert(0.5, 5.0),
                              int(ffe.GATE_TEMP_FMT.quantize(rng.uniform(-8, 8))))


@pytest.mark.parametrize("routing", ["sf", "sf+tilt"])
def test_dualpcen_synthetic_params_random_and_extremes(routing):
    p = synthetic_params(routing, seed=1)
    mel = random_mel(np.random.default_rng(2), 2, 5)
    exp = ffe.dual_pcen(p, mel)
    np.testing.assert_array_equal(run_fe(DualPCEN(params=p, n_frames=5), mel), exp)


def published_dualpcen(published_ckpt, seed_clip) -> ffe.FrontendParams:
    from nanomamba_hw.checkpoint import load_checkpoint
    from nanomamba_hw.fixed.model import quantize

    words = ("yes", "no", "up", "down", "go", "stop")
    calib = np.stack([load_clip(seed_clip(w)).samples for w in words])
    return quantize(load_checkpoint(published_ckpt("NanoMamba-Tiny-DualPCEN")),
                    calib.astype(np.float32)).frontend


@pytest.mark.parametrize("routing", ["sf", "sf+tilt"])
def test_dualpcen_published_params_real_clips(published_ckpt, seed_clip, routing):
    """Tiny-DualPCEN's quantized constants (routing "sf" as published; "sf+tilt" as the preset
    variants use) on two real clips back to back: the smoothers restart at the second clip."""
    p = published_dualpcen(published_ckpt, seed_clip)
    assert p.routing == "sf"
    p = dataclasses.replace(p, routing=routing)
    mel = real_mel(("yes", "up"), 30, 5, seed_clip)
    mel[1, :, 0] = 0                                  # floored everywhere
    tr: dict = {}
    exp = ffe.dual_pcen(p, mel, trace=tr)
    if routing == "sf+tilt":                          # the tilt term must matter here
        tr_sf: dict = {}
        ffe.dual_pcen(dataclasses.replace(p, routing="sf"), mel, trace=tr_sf)
        assert (tr["gate"] != tr_sf["gate"]).any()
    np.testing.assert_array_equal(run_fe(DualPCEN(params=p, n_frames=5), mel, seed=4), exp)


def test_make_frontend_kinds():
    for params, cls in ((ffe.FrontendParams("logmel"), LogMel),
                        (synthetic_params("sf", 0), DualPCEN)):
        fe = make_frontend(params, n_frames=7)
        fe._MustUse__silence = True                   # built only to check its type
        assert isinstance(fe, cls)
    with pytest.raises(ValueError):
        make_frontend(ffe.FrontendParams("cepstrum"))


@pytest.mark.parametrize("kind", ["logmel", "dualpcen"])
def test_frontend_cycles_per_frame(kind):
    T = 4
    dut = LogMel() if kind == "logmel" else DualPCEN(params=synthetic_params("sf+tilt", 3),
                                                      n_frames=T)
    mel = random_mel(np.random.default_rng(5), 1, T)
    ends = []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, clip_payloads(mel))

    async def watch(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(ends) < T:
            *_, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid and payload.last:
                ends.append(cycle)

    run_sim(dut, [feed, watch], deadline=1.0)
    per_frame = np.diff(ends).tolist()
    print(f"\n{type(dut).__name__}: {per_frame} cycles per frame (first frame out at {ends[0]})")
    assert max(per_frame) <= (45 if kind == "logmel" else 520)
