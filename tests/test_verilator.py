"""The emitted Verilog of the whole accelerator, compiled with Verilator, bit-exact with the
fixed model on real and synthetic clips (incl. silence and full scale), for the default
checkpoint and for the published Tiny-DualPCEN one. Longer runs: python -m nanomamba_hw.verify."""

from __future__ import annotations

import numpy as np
import pytest

from nanomamba_hw.audio import float_from_pcm, load_clip
from nanomamba_hw.checkpoint import load_checkpoint
from nanomamba_hw.engines import VerilatorEngine
from nanomamba_hw.fixed.model import run as fixed_run
from nanomamba_hw.predict import DEFAULT_CKPT
from nanomamba_hw.quantize import params_for
from nanomamba_hw.verify import compare_clip, synthetic_clips

from .conftest import CLIPS


def _clips(seed_dir):
    synth, names = synthetic_clips(4, seed=1)          # 2 clean + 2 noisy + 5 edge signals
    real = np.stack([load_clip(seed_dir / "audio" / f"{w}.wav").pcm for w in CLIPS])
    return np.concatenate([real, synth]), list(CLIPS) + names


@pytest.mark.parametrize("which", ["default", "published"])
def test_verilator_bit_exact(which, seed_dir, published_ckpt):
    ckpt = load_checkpoint(DEFAULT_CKPT if which == "default"
                           else published_ckpt("NanoMamba-Tiny-DualPCEN"))
    params = params_for(ckpt)
    pcm, names = _clips(seed_dir)
    assert len(pcm) >= 10 and any(n == "edge:silence" for n in names)
    hw = VerilatorEngine(ckpt, params).run(float_from_pcm(pcm))
    ref = fixed_run(params, pcm)
    for i, name in enumerate(names):
        diff = compare_clip(hw[i], int(ref.index[i]), [int(v) for v in ref.logits[i]])
        assert diff is None, f"{name}: {diff}"
        assert hw[i]["cycles"] > 0
