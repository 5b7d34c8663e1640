"""The whole spectral half (mel + SNR + front end + feature buffer, :class:`Spectral`) on real
clips, bit-exact with the fixed model's stages: features, SNR and the instance norm's Σx, Σx²
per band; and its cycles per frame.

Real frames of both published checkpoints through the whole engine (with stalls) are also
``test_snr.py::test_engine_real_frames``; a whole 101-frame clip of the default checkpoint
runs end to end in Verilator in ``tests/test_build.py``. The 101-frame clips here take 70 s and
120 s of Amaranth simulation and are ``slow`` (``pytest -m slow tests/hw/test_spectral.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from nanomamba_hw.fixed import snr as fsnr
from nanomamba_hw.hw.snr import DEPTH, II
from nanomamba_hw.hw.spectral import CLEAR_CYCLES

from .spectral_util import check_features, expected, real_mags, run_spectral


def check_clip(out, feat, snr):
    np.testing.assert_array_equal(out.snr, snr)
    check_features(out, feat)


def test_spectral_restart_and_back_to_back(fixed_params, seed_clip):
    """DualPCEN/EMA, one feature bank: a partial clip abandoned by ``clip_start`` in the middle
    of its third frame, the rest of that frame still arriving afterwards (as the STFT would
    deliver it: the engine must drop it up to the next ``first``), then two 6-frame clips back
    to back; the second waits for the release of the first."""
    p = fixed_params["dualpcen"]
    T = 6
    a, b = real_mags("go", seed_clip)[:, 30:30 + T], real_mags("no", seed_clip)[:, 40:40 + T]
    out, _ = run_spectral(p, [a, b], stall=0.1, n_banks=1, junk=real_mags("up", seed_clip)[:, :3],
                          cut=600, release_wait=200, seed=1)
    for o, mag in zip(out, (a, b)):
        want = expected(p, mag)
        check_clip(o, want["feat"], want["snr"])


def frame_period(front_cycles: int) -> int:
    """The engine's cycles per frame after the look-ahead, the input always valid, from the
    schedule: bins are issued at slot boundaries, one every II = 8 cycles (bins 0…256: 256·II
    from the first to the last); the last bin with work (255, issued II before the last) has
    drained DEPTH cycles after its issue, then one cycle for ``done`` and one to enter FRONT,
    the front-end pass, CLEAR; the next frame's bin 0 waits for the next slot boundary."""
    after_last = (DEPTH + 2 - II) + front_cycles + CLEAR_CYCLES
    return 256 * II + -(-after_last // II) * II


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["logmel", "dualpcen"])
def test_spectral_full_clip(fixed_params, seed_clip, kind):
    """All 101 frames of a real clip: features, SNR and statistics; the stage outputs equal
    the traced integers of ``fixed.model.run`` on the clip's PCM. No stalls: prints the cycles
    per frame, checked against the schedule (``frame_period``)."""
    from nanomamba_hw.audio import load_clip
    from nanomamba_hw.fixed import stft
    from nanomamba_hw.fixed.model import run
    from nanomamba_hw.hw.frontend import frontend_class

    p = fixed_params[kind]
    pcm = load_clip(seed_clip("stop")).pcm
    mag = stft.stft_magnitude(pcm[None])[0]
    st = run(p, pcm, trace=True).stages
    out, info = run_spectral(p, [mag])
    check_clip(out[0], st["instnorm_in"][0], st["snr_mel"][0])
    per_frame = np.diff(info.frame_in)
    S = fsnr.STATIC_FRAMES
    burst = int(per_frame[S - 1])                 # frame 4 → 5: INIT and frames 0–4 replayed
    period = frame_period(frontend_class(kind).schedule_cycles(p.config.n_mels))
    print(f"\nSpectral[{kind}]: 101 frames in {info.frame_in[-1]} cycles (input always valid): "
          f"frames 0–4 every {sorted(set(per_frame[:S - 1].tolist()))}, frame 4 → 5 {burst} "
          f"(INIT and frames 0–4 replayed), then every {sorted(set(per_frame[S:].tolist()))} "
          f"(schedule: {period}); clip complete in the buffer at cycle {info.full_at[0]}")
    assert (per_frame[S:] == period).all()
