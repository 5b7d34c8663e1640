"""Calibration clips for the quantizer's range analysis.

The default set is reproducible from a seed with nothing but this package: clips of the
synthetic corpus's validation split (voices never used in training), each once clean and once
mixed with one of the five noise types at an SNR drawn from [−5, 20] dB, plus the edge signals
a deployed accelerator must survive (digital silence, full-scale square wave, DC, impulse,
full-scale white noise). A user with their own data passes a directory of WAVs instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .audio import expand_inputs, float_from_pcm, load_clip
from .errors import NanoMambaError

DEFAULT_CLIPS = 96
DEFAULT_SEED = 1234


def edge_signals() -> dict[str, np.ndarray]:
    """Digital silence, full-scale square wave, DC, impulse and full-scale white noise (int16)."""
    t = np.arange(16000)
    rng = np.random.default_rng(7)
    return {
        "silence": np.zeros(16000, np.int16),
        "square": np.where((t // 40) % 2 == 0, 32767, -32768).astype(np.int16),
        "dc": np.full(16000, 16384, np.int16),
        "impulse": (np.arange(16000) == 8000).astype(np.int16) * 32767,
        "white_full_scale": rng.integers(-32768, 32768, 16000).astype(np.int16),
    }


def default_calibration(n_clips: int = DEFAULT_CLIPS, seed: int = DEFAULT_SEED,
                        progress: bool = False) -> tuple[np.ndarray, dict]:
    """(N, 16000) float32 clips and a description of where they came from."""
    from .data import NOISE_TYPES, SpeechCommands, make_noise, mix_at_snr, speech_source_from_corpus
    from .data.synthetic import build_corpus, read_manifest

    root = build_corpus(progress=progress)
    ds = SpeechCommands(root, "val")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(ds), size=min(n_clips, len(ds)), replace=False))
    clean = np.stack([ds[int(i)][0] for i in pick])
    speech = speech_source_from_corpus(root, seed=seed)
    noisy = []
    for j, x in enumerate(clean):
        kind = NOISE_TYPES[j % len(NOISE_TYPES)]
        noise = make_noise(kind, len(x), rng, speech_source=speech)
        noisy.append(mix_at_snr(x, noise, float(rng.uniform(-5, 20))))
    edges = np.stack([float_from_pcm(v) for v in edge_signals().values()])
    audio = np.concatenate([clean, np.asarray(noisy, np.float32), edges]).astype(np.float32)
    # Quantize to int16 as the hardware will see them.
    audio = np.clip(np.rint(audio * 32768), -32768, 32767).astype(np.float32) / 32768
    manifest = read_manifest(root) or {}
    info = {"source": "synthetic corpus validation split, clean + noisy (-5..20 dB) + edge signals",
            "corpus_params": manifest.get("params"), "clips": int(len(audio)), "seed": seed}
    return audio, info


def calibration_from_dir(path: str | Path) -> tuple[np.ndarray, dict]:
    """Every WAV in a directory (recursively), loaded as model clips."""
    p = Path(path)
    if not p.is_dir():
        raise NanoMambaError(f"{p}: calibration set must be a directory of WAV files")
    files = sorted(q for q in p.rglob("*.wav") if not any(s.startswith("_") for s in q.parts))
    files = files or expand_inputs([str(p)])
    if not files:
        raise NanoMambaError(f"{p}: no WAV files found for calibration")
    audio = np.stack([load_clip(f).samples for f in files])
    return audio, {"source": str(p), "clips": int(len(audio))}
