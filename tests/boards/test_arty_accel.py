"""The Arty A7 board top around the real accelerator, end to end in the Amaranth simulator:
a CLIP packet built by the host tool's protocol code goes bit by bit into the UART rx pin, the
tx pin is decoded bit by bit by the same protocol code, and the RESULT equals the fixed model.

The default test uses the first 800 samples of a real clip with an accelerator generated for
800-sample clips (6 frames); the full one-second clip (about 2.6 M cycles) is marked slow."""

from __future__ import annotations

import pytest

from boards.arty_a7 import ArtyA7Top
from nanomamba_hw import protocol as P
from nanomamba_hw.audio import load_clip
from nanomamba_hw.fixed import model as fm
from nanomamba_hw.hw.accelerator import Accelerator

from ..hw.test_accelerator import ARTEFACT
from .test_arty_top import Host

CLK, BAUD, CPB = 4e6, 1e6, 4


def _run_board(params, pcm):
    top = ArtyA7Top(Accelerator(params, clip_samples=len(pcm)), clk_freq=CLK, baud=BAUD,
                    idle_timeout=1.0)
    host = Host(top, clip_len=len(pcm), cpb=CPB)
    host.send(P.encode(P.Clip(tuple(int(v) for v in pcm)))).expect(1)
    return host.run(deadline=10.0)


def _check(params, pcm, packets):
    results = [p for p in packets if isinstance(p, P.Result)]
    assert len(results) == 1, packets
    want = fm.run(params, pcm[None])
    assert results[0].index == int(want.index[0])
    assert list(results[0].logits) == [int(v) for v in want.logits[0]]


def test_board_with_accelerator_short_real_clip(seed_clip):
    params = fm.FixedParams.load(ARTEFACT)
    pcm = load_clip(seed_clip("yes")).pcm[4000:4800]
    _check(params, pcm, _run_board(params, pcm))


@pytest.mark.slow
def test_board_with_accelerator_full_real_clip(seed_clip):
    """Equal to ``predict --engine fixed`` on the same WAV."""
    params = fm.FixedParams.load(ARTEFACT)
    pcm = load_clip(seed_clip("yes")).pcm
    _check(params, pcm, _run_board(params, pcm))
