"""Fixtures of the hardware tests: the published checkpoints quantized, by front-end kind."""

from __future__ import annotations

import numpy as np
import pytest

from .spectral_util import CLIP_WORDS, KINDS


@pytest.fixture(scope="session")
def fixed_params(published_ckpt, seed_clip):
    """Quantized artefacts of the published checkpoints, by front-end kind: ``"logmel"``
    (NanoMamba-Tiny: log-mel, static SNR) and ``"dualpcen"`` (NanoMamba-Tiny-DualPCEN:
    DualPCEN routing "sf", EMA SNR), calibrated on the six seed clips."""
    from nanomamba_hw.audio import load_clip
    from nanomamba_hw.checkpoint import load_checkpoint
    from nanomamba_hw.fixed.model import quantize

    calib = np.stack([load_clip(seed_clip(w)).samples for w in CLIP_WORDS]).astype(np.float32)
    return {k: quantize(load_checkpoint(published_ckpt(name)), calib) for k, name in KINDS.items()}
