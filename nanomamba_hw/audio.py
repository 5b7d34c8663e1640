"""WAV input and output for every engine.

The model is defined on one-second, 16 kHz, mono clips in [-1, 1) (``pcm / 32768`` for 16-bit
PCM, as torchaudio gives). :func:`load_clip` turns any readable WAV into that, saying what it
changed, so the float model, the fixed-point model and the hardware all see the same clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .config import CLIP_SAMPLES, SAMPLE_RATE
from .errors import AudioError


@dataclass
class Clip:
    """A clip ready for the model: ``samples`` float32 (16000,) in [-1, 1], ``pcm`` int16."""

    samples: np.ndarray
    path: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def pcm(self) -> np.ndarray:
        """The clip as int16 PCM (what the hardware receives): round(x * 32768), saturated."""
        return pcm_from_float(self.samples)


def pcm_from_float(x: np.ndarray) -> np.ndarray:
    """Float samples to int16 PCM: round half to even of x·32768, clipped to the int16 range."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def float_from_pcm(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM to float32 samples, ``pcm / 32768`` exactly (as torchaudio loads 16-bit WAVs)."""
    return (np.asarray(pcm, dtype=np.float32) / np.float32(32768.0)).astype(np.float32)


def fit_length(x: np.ndarray, n: int = CLIP_SAMPLES) -> np.ndarray:
    """Zero-pad at the end or keep the first ``n`` samples, as the original training did."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


def read_wav(path: str | Path) -> tuple[np.ndarray, int, str]:
    """Read a WAV as float32 (frames, channels) with its sample rate and subtype.

    Raises :class:`AudioError` naming the file when it is missing, not a WAV, or empty.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not a WAV file")
    try:
        info = sf.info(str(p))
        if info.format != "WAV" and info.format != "WAVEX":
            raise AudioError(f"{p}: not a WAV file (format {info.format})")
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError on garbage
        raise AudioError(f"{p}: not a readable WAV file ({e})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{p}: WAV file holds no samples")
    return data, int(rate), info.subtype


def load_clip(path: str | Path, *, length: int = CLIP_SAMPLES) -> Clip:
    """Load a WAV as a one-second 16 kHz mono clip, recording every conversion in ``notes``.

    - 16-bit PCM at 16 kHz mono is used as is (``pcm / 32768``);
    - more channels are averaged to mono;
    - other sample rates are resampled with ``scipy.signal.resample_poly``;
    - other sample formats (8/24/32-bit, float) are read as float; values beyond ±1 are clipped;
    - the length is zero-padded at the end or cut to the first second.
    """
    data, rate, subtype = read_wav(path)
    notes: list[str] = []
    if data.shape[1] > 1:
        notes.append(f"mixed {data.shape[1]} channels down to mono")
        x = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    else:
        x = data[:, 0]
    if subtype != "PCM_16":
        notes.append(f"sample format {subtype} converted to float")
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        x = resample_poly(x.astype(np.float64), SAMPLE_RATE // g, rate // g).astype(np.float32)
        notes.append(f"resampled from {rate} Hz to {SAMPLE_RATE} Hz")
    if np.any(np.abs(x) > 1.0):
        notes.append("samples beyond full scale clipped to [-1, 1]")
        x = np.clip(x, -1.0, 1.0)
    if len(x) != length:
        how = "zero-padded" if len(x) < length else "cut"
        notes.append(f"{len(x)} samples {how} to {length}")
        x = fit_length(x, length)
    return Clip(samples=np.ascontiguousarray(x, dtype=np.float32), path=str(path), notes=notes)


def write_wav(path: str | Path, pcm: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write int16 PCM (1-D) as a 16-bit mono WAV."""
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        raise TypeError(f"write_wav takes int16 PCM, got {pcm.dtype}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, rate, subtype="PCM_16")


def expand_inputs(paths: list[str]) -> list[Path]:
    """Command-line inputs to WAV paths: a directory means every ``*.wav`` inside it (sorted)."""
    out: list[Path] = []
    for a in paths:
        p = Path(a)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() == ".wav" and q.is_file()))
        else:
            out.append(p)
    return out
