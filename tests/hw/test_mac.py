"""MAC engine in the Amaranth simulator: every QLinear of real models, bit-exact with
``QLinear.__call__`` on random vectors (INT8 and INT16 weights, one and several lanes).

Also holds the model fixtures the other back-end tests share (:func:`fixed_params`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from nanomamba_hw.fixed.linear import QLinear
from nanomamba_hw.fixed.ops import Fmt
from nanomamba_hw.hw.mac import MACEngine, MulBank, mac_cycles
from nanomamba_hw.hw.sim_util import run_sim, stream_put

SEED = Path(__file__).resolve().parents[2].parent / "shared" / "seed"


# ----------------------------------------------------------------------------------------------
# Shared model fixtures (imported by the other back-end tests)

def need_seed() -> Path:
    if not (SEED / "checkpoints").is_dir():
        pytest.skip(f"published NanoMamba seed data not found at {SEED}")
    return SEED


@functools.cache
def seed_audio() -> np.ndarray:
    from nanomamba_hw.audio import load_clip
    return np.stack([load_clip(p).samples for p in sorted((need_seed() / "audio").glob("*.wav"))])


@functools.cache
def seed_pcm(word: str) -> np.ndarray:
    from nanomamba_hw.audio import load_clip
    return load_clip(need_seed() / "audio" / f"{word}.wav").pcm


@functools.cache
def fixed_params(name: str = "NanoMamba-Tiny-DualPCEN", weight_bits: int = 8):
    """Quantized published checkpoint, calibrated on the six seed clips."""
    from nanomamba_hw.checkpoint import load_checkpoint
    from nanomamba_hw.fixed.model import quantize
    ck = load_checkpoint(need_seed() / "checkpoints" / f"{name}.pt")
    return quantize(ck, seed_audio(), weight_bits=weight_bits)


@functools.cache
def matched_params(weight_bits: int = 8):
    """A random-weight Matched-DualPCEN model (21/5/31), calibrated on the seed clips."""
    import torch

    from nanomamba_hw.checkpoint import Checkpoint
    from nanomamba_hw.config import variant
    from nanomamba_hw.fixed.model import quantize
    from nanomamba_hw.reference.model import NanoMamba
    cfg = variant("matched-dualpcen")
    torch.manual_seed(7)
    model = NanoMamba(cfg).eval()
    ck = Checkpoint(model=model, config=cfg, class_names=cfg.class_names, layout="random",
                    path="random", provenance={})
    return quantize(ck, seed_audio(), weight_bits=weight_bits)


def all_qlinears(p) -> list[QLinear]:
    out = [p.patch_proj]
    for b in p.blocks:
        out += [b.in_proj, b.conv, b.x_proj, b.snr_proj, b.dt_proj, b.out_proj]
    return out + [p.classifier]


def random_inputs(fmt: Fmt, shape, rng) -> np.ndarray:
    """Uniform over the whole format, with its extremes forced into the first rows."""
    x = rng.integers(fmt.min_int, fmt.max_int + 1, size=shape, dtype=np.int64)
    flat = x.reshape(-1)
    flat[: min(3, flat.size)] = [fmt.max_int, fmt.min_int, 0][: min(3, flat.size)]
    return x


# ----------------------------------------------------------------------------------------------
# Harness: engine + its multipliers + an input memory holding several vectors

class MACHarness(wiring.Component):
    def __init__(self, layers, lanes, n_vec, stride):
        self.engine = MACEngine(layers, lanes=lanes)
        self.stride = stride
        self.n_vec = n_vec
        super().__init__({})
        self.base = Signal(range(n_vec * stride + 1))
        self.dw = Signal()
        self.row = Signal(8)
        self.images = [0] * (n_vec * stride)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = e = self.engine
        m.submodules.muls = MulBank([e.mul])
        m.submodules.mem = mem = Memory(shape=e.rd.data.shape(), depth=len(self.images),
                                        init=self.images)
        rd = mem.read_port()
        m.d.comb += [rd.addr.eq(self.base + Mux(self.dw, e.rd.o * self.row, 0) + e.rd.i),
                     rd.en.eq(1),
                     e.rd.data.eq(rd.data)]
        return m


def run_engine(layers, vectors, lanes=1, depthwise=False):
    """Run every (layer index, vector) pair; return the outputs and the cycles per job."""
    stride = max(v.size for _, v in vectors)
    h = MACHarness(layers, lanes, len(vectors), stride)
    for k, (_, v) in enumerate(vectors):
        h.images[k * stride:k * stride + v.size] = [int(a) for a in v.reshape(-1)]
    got, cycles = [], []

    async def tb(ctx):
        e = h.engine
        for k, (j, v) in enumerate(vectors):
            ctx.set(h.base, k * stride)
            ctx.set(h.dw, int(layers[j].depthwise))
            ctx.set(h.row, layers[j].w.shape[1])
            await stream_put(ctx, e.job, j)
            n = layers[j].w.shape[0]
            res = {}
            c = 0
            while len(res) < n:
                _, _, valid, payload = await ctx.tick().sample(e.o.valid, e.o.payload)
                c += 1
                if valid:
                    assert payload.index not in res
                    res[payload.index] = payload.value
                    assert payload.last == (len(res) == n)
                assert c < 20 * (layers[j].w.size + 20), "engine hung"
            got.append(np.array([res[i] for i in range(n)], dtype=np.int64))
            cycles.append(c)

    run_sim(h, [tb])
    return got, cycles


def _check_layers(layers, lanes, n_per_layer=2, seed=0):
    rng = np.random.default_rng(seed)
    vectors = []
    for j, q in enumerate(layers):
        shape = q.w.shape if q.depthwise else (q.w.shape[1],)
        for _ in range(n_per_layer):
            vectors.append((j, random_inputs(q.in_fmt, shape, rng)))
    got, cycles = run_engine(layers, vectors, lanes)
    for (j, v), g in zip(vectors, got):
        np.testing.assert_array_equal(g, layers[j](v), err_msg=layers[j].name)
    return cycles


def _synthetic_layers() -> list[QLinear]:
    """Layers with the shapes and formats of the back end, without the seed data."""
    rng = np.random.default_rng(3)
    s16 = Fmt(16, 11)
    return [
        QLinear.from_float("dense", rng.normal(size=(7, 13)), rng.normal(size=7), s16, Fmt(24, 11)),
        QLinear.from_float("dw", rng.normal(size=(5, 3)), rng.normal(size=5), Fmt(16, 9),
                           Fmt(16, 9), depthwise=True),
        QLinear.from_float("one_in", rng.normal(size=(6, 1)), rng.normal(size=6) * 3, Fmt(16, 9),
                           Fmt(16, 8)),
        QLinear.from_float("unsigned_in", rng.normal(size=(3, 9)), None, Fmt(16, 15, signed=False),
                           Fmt(16, 9)),
        QLinear.from_float("wide", rng.normal(size=(4, 8)) * 0.01, None, Fmt(24, 10), Fmt(24, 11),
                           weight_bits=16),
    ]


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_engine_synthetic_layers(lanes):
    _check_layers(_synthetic_layers(), lanes, n_per_layer=3)


@pytest.mark.parametrize("weight_bits,lanes", [(8, 1), (16, 1), (8, 2)])
def test_engine_tiny_dualpcen_layers(weight_bits, lanes):
    layers = all_qlinears(fixed_params(weight_bits=weight_bits))
    _check_layers(layers, lanes, n_per_layer=2, seed=weight_bits + lanes)


def test_engine_small_layers():
    p = fixed_params("NanoMamba-Small")
    layers = [p.patch_proj] + [getattr(p.blocks[2], k) for k in
                               ("in_proj", "conv", "x_proj", "snr_proj", "dt_proj", "out_proj")]
    _check_layers(layers + [p.classifier], 2, n_per_layer=1, seed=5)


def test_engine_throughput():
    """One multiply-accumulate per lane per cycle: a job costs its MAC cycles plus latency."""
    layers = _synthetic_layers()
    for lanes in (1, 2):
        rng = np.random.default_rng(0)
        vectors = [(0, random_inputs(layers[0].in_fmt, (13,), rng))]
        _, cycles = run_engine(layers, vectors, lanes)
        assert cycles[0] <= mac_cycles(layers[:1], lanes) + MACEngine.latency + lanes + 1, cycles
