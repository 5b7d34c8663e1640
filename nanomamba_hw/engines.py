"""Inference engines behind ``predict``/``evaluate``: one interface, several implementations.

An engine takes a batch of one-second clips and returns, per clip, the class index and the
12 logits as floats, plus engine-specific extras (``logits_int`` for integer engines,
``cycles`` for hardware simulation). ``float`` is the PyTorch reference model; the
fixed-point and hardware engines register here as they are built.
"""

from __future__ import annotations

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


ENGINES: dict[str, Callable[[Checkpoint], Engine]] = {"float": FloatEngine}


def engine_names() -> list[str]:
    return list(ENGINES)


def make_engine(name: str, ckpt: Checkpoint) -> Engine:
    """The engine called ``name`` for ``ckpt``; :class:`EngineError` listing the known ones."""
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")
    return ENGINES[name](ckpt)
