"""Procedural noise for training augmentation and the noisy evaluation sweep.

The generators follow the training recipe of the original work (model-math.md §8): every one
is ``f(n_samples, rng) -> float32`` and ends by peak-normalising to 0.7, so a noise's level is
only set by :func:`mix_at_snr`. They are written from that description, not from its code.

One deliberate departure: the original "babble" was five to eight sums of sine tones (its real
speech source was never filled in). Here babble is made from **real speech clips** that the
caller supplies, for instance the held-out ``_babble_`` voices of the synthetic corpus (see
:func:`speech_source_from_corpus`), so that it never reuses a training clip.

Frequencies are in Hz at 16 kHz. The generators are defined on one-second clips; for longer
ones (the background-noise files of the synthetic corpus) the counts of discrete events
(factory impacts, street horns) scale with the duration, one draw per started second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..config import CLIP_SAMPLES, SAMPLE_RATE
from .speech_commands import DatasetError, SpeechCommands, read_mono_16k

NOISE_TYPES: tuple[str, ...] = ("factory", "white", "babble", "street", "pink")

PEAK = 0.7  # every generator's output peak (as in the original)

# A speech source for babble: a callable drawing one mono float clip from the rng, or a
# collection of clips (a list of 1-D arrays or a 2-D array, one clip per row).
SpeechSource = Callable[[np.random.Generator], np.ndarray] | Sequence[np.ndarray] | np.ndarray


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def peak_normalise(x: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scale ``x`` so that max |x| = ``peak``; an all-zero input stays zero. Returns float32."""
    x = np.asarray(x, dtype=np.float64)
    m = float(np.max(np.abs(x))) if x.size else 0.0
    if m > 0.0:
        x = x * (peak / m)
    return x.astype(np.float32)


def _band_limit(x: np.ndarray, lo: float, hi: float, smooth: int = 0) -> np.ndarray:
    """Keep the ``lo``..``hi`` Hz band of ``x`` with an FFT mask (optionally box-smoothed)."""
    n = len(x)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
    mask = ((f >= lo) & (f <= hi)).astype(np.float64)
    if smooth > 1:
        # A box over neighbouring bins softens the brick-wall edges (the original used 20 taps).
        mask = np.convolve(mask, np.ones(smooth) / smooth, mode="same")
    return np.fft.irfft(spec * mask, n)


def _events_count(n: int, rng: np.random.Generator, lo: int, hi: int) -> int:
    """``U{lo..hi}`` events per started second, so a 1 s clip gets exactly the recipe's count."""
    seconds = max(1, math.ceil(n / SAMPLE_RATE))
    return int(rng.integers(lo, hi + 1, size=seconds).sum())


def _hann_burst(x: np.ndarray, burst: np.ndarray, start: int) -> None:
    """Add ``burst`` to ``x`` at ``start`` in place, cut at the end of ``x``."""
    end = min(len(x), start + len(burst))
    if end > start:
        x[start:end] += burst[: end - start]


def white(n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """White Gaussian noise (randn), peak 0.7."""
    return peak_normalise(_rng(rng).standard_normal(n))


def _pink_raw(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
    scale = np.zeros_like(f)
    scale[1:] = 1.0 / np.sqrt(f[1:])  # 1/f power; DC removed rather than made infinite
    return np.fft.irfft(spec * scale, n)


def pink(n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Pink noise: a white spectrum divided by √f, back through the inverse real FFT. Peak 0.7."""
    return peak_normalise(_pink_raw(n, _rng(rng)))


def factory(n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Factory noise: mains hum, a machine rumble, impacts and a pink bed. Peak 0.7.

    - hum at h = 50, 100, …, 250 Hz with amplitude 0.3·50/h and a random phase each;
    - rumble: 0.2·randn band-limited to 200–800 Hz (FFT mask smoothed by a 20-bin box);
    - 5–14 impacts per second: Hann-windowed noise bursts of 50–499 samples, amplitude U(0.3, 0.8);
    - 0.15 × pink noise (itself peak-normalised to 0.7 first).
    """
    rng = _rng(rng)
    t = np.arange(n) / SAMPLE_RATE
    x = np.zeros(n)
    for h in range(50, 251, 50):
        x += 0.3 * 50.0 / h * np.sin(2 * np.pi * h * t + rng.uniform(0, 2 * np.pi))
    x += _band_limit(0.2 * rng.standard_normal(n), 200.0, 800.0, smooth=20)
    for _ in range(_events_count(n, rng, 5, 14)):
        length = int(rng.integers(50, 500))
        start = int(rng.integers(0, max(1, n - length)))
        amp = rng.uniform(0.3, 0.8)
        _hann_burst(x, amp * np.hanning(length) * rng.standard_normal(length), start)
    x += 0.15 * peak_normalise(_pink_raw(n, rng)).astype(np.float64)
    return peak_normalise(x)


def street(n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Street noise: traffic rumble, horns, road noise and an engine. Peak 0.7.

    - 0.3·randn band-limited to 20–200 Hz;
    - 1–3 horns per second: 300–600 Hz tones of 1000–2999 samples under a Hann window (the
      recipe gives no horn level; we use amplitude U(0.3, 0.6));
    - 0.15·randn broadband road noise;
    - an engine at f ∈ U(80, 150) Hz with amplitude 0.2 plus its 2nd harmonic at 0.1.
    """
    rng = _rng(rng)
    t = np.arange(n) / SAMPLE_RATE
    x = _band_limit(0.3 * rng.standard_normal(n), 20.0, 200.0)
    for _ in range(_events_count(n, rng, 1, 3)):
        length = int(rng.integers(1000, 3000))
        start = int(rng.integers(0, max(1, n - length)))
        f = rng.uniform(300.0, 600.0)
        tone = np.sin(2 * np.pi * f * np.arange(length) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi))
        _hann_burst(x, rng.uniform(0.3, 0.6) * np.hanning(length) * tone, start)
    x += 0.15 * rng.standard_normal(n)
    f0 = rng.uniform(80.0, 150.0)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    x += 0.2 * np.sin(2 * np.pi * f0 * t + phase[0]) + 0.1 * np.sin(4 * np.pi * f0 * t + phase[1])
    return peak_normalise(x)


def _draw_clip(source: SpeechSource, rng: np.random.Generator) -> np.ndarray:
    if callable(source):
        clip = source(rng)
    else:
        clip = source[int(rng.integers(0, len(source)))]
    return np.asarray(clip, dtype=np.float64).reshape(-1)


def _trim(x: np.ndarray, rel: float = 0.02) -> np.ndarray:
    """Drop leading/trailing samples below ``rel`` × peak, so talkers do not pause for long."""
    m = np.max(np.abs(x)) if x.size else 0.0
    if m <= 0.0:
        return x
    idx = np.flatnonzero(np.abs(x) >= rel * m)
    return x[idx[0]: idx[-1] + 1]


def babble(n: int, rng: np.random.Generator | int | None = None, *,
           speech_source: SpeechSource | None = None,
           talkers: tuple[int, int] = (5, 8)) -> np.ndarray:
    """Babble: 5–8 talkers of real speech summed, peak 0.7.

    Each talker is a stream of clips drawn from ``speech_source`` (silence trimmed, short random
    pauses of 0–150 ms between them), read from a random offset, brought to a common RMS and then
    given a random level within 6 dB, so no single talker dominates. ``speech_source`` is a
    callable ``rng -> clip`` or a collection of clips; use held-out speech (for the synthetic
    corpus, :func:`speech_source_from_corpus`) so babble never reuses a training clip.
    """
    if speech_source is None:
        raise ValueError("babble needs speech_source: held-out speech clips, e.g. "
                         "speech_source_from_corpus(corpus_dir)")
    if not callable(speech_source) and len(speech_source) == 0:
        raise ValueError("babble speech_source holds no clips")
    rng = _rng(rng)
    out = np.zeros(n)
    for _ in range(int(rng.integers(talkers[0], talkers[1] + 1))):
        parts: list[np.ndarray] = []
        have = 0
        lead = int(rng.integers(0, SAMPLE_RATE // 2))  # random offset into the talker's stream
        while have < n + lead:
            clip = _trim(_draw_clip(speech_source, rng))
            if clip.size == 0:
                raise ValueError("babble speech_source gave an empty clip")
            gap = np.zeros(int(rng.integers(0, int(0.15 * SAMPLE_RATE))))
            parts += [clip, gap]
            have += len(clip) + len(gap)
        stream = np.concatenate(parts)[lead: lead + n]
        rms = np.sqrt(np.mean(stream ** 2) + 1e-10)
        out += stream / rms * 10.0 ** (rng.uniform(-6.0, 0.0) / 20.0)
    return peak_normalise(out)


_GENERATORS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "white": white, "pink": pink, "factory": factory, "street": street,
}


def make_noise(kind: str, n: int = CLIP_SAMPLES, rng: np.random.Generator | int | None = None, *,
               speech_source: SpeechSource | None = None) -> np.ndarray:
    """A float32 noise of ``n`` samples of the given kind (one of :data:`NOISE_TYPES`), peak 0.7.

    ``rng`` is a numpy Generator or an integer seed; the same seed gives the same noise.
    ``speech_source`` is required for ``"babble"`` and ignored otherwise.
    """
    if kind == "babble":
        return babble(n, rng, speech_source=speech_source)
    if kind not in _GENERATORS:
        raise ValueError(f"unknown noise type {kind!r}; known: {', '.join(NOISE_TYPES)}")
    return _GENERATORS[kind](n, _rng(rng))


def rms(x: np.ndarray) -> np.ndarray:
    """√(mean(x²) + 1e-10) over the last axis (the recipe's per-clip level)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(np.mean(x * x, axis=-1) + 1e-10)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float | np.ndarray) -> np.ndarray:
    """Add ``noise`` to ``clean`` at ``snr_db``: ``clean + noise · rms_c·10^(−snr/20) / rms_n``.

    RMS levels are measured over each whole clip (last axis). Works on one clip ``(N,)`` or a
    batch ``(B, N)``; ``noise`` may be one clip shared by the batch (as the original evaluation
    did) or one per row, and ``snr_db`` a scalar or one value per row. No clipping or
    renormalisation afterwards, as in the original. Returns float32.
    """
    c = np.asarray(clean, dtype=np.float64)
    z = np.asarray(noise, dtype=np.float64)
    if z.shape[-1] != c.shape[-1]:
        raise ValueError(f"noise has {z.shape[-1]} samples per clip, clean has {c.shape[-1]}")
    snr = np.asarray(snr_db, dtype=np.float64)
    gain = rms(c) * 10.0 ** (-snr / 20.0) / rms(z)
    return (c + z * np.asarray(gain)[..., None]).astype(np.float32)


def speech_source_from_corpus(root: str | Path, *, source: str = "auto",
                              max_clips: int | None = None,
                              seed: int = 0) -> list[np.ndarray]:
    """Load held-out speech clips from a corpus directory to feed :func:`babble`.

    ``source``:

    - ``"babble"``: the ``_babble_/*.wav`` clips of a synthetic corpus. They are spoken by voices
      that belong to no split, so babble made from them shares no speaker with train, val or test;
    - ``"val"`` / ``"test"``: the word clips of that split (not silence). On the real Speech
      Commands this is the only held-out speech, but babble made from it puts val/test speakers
      into training noise; prefer ``"babble"`` where it exists;
    - ``"auto"`` (default): ``"babble"`` if ``_babble_`` exists, else ``"test"``.

    ``max_clips`` keeps a seeded random subset. Returns a list of float32 arrays (any length).
    """
    root = Path(root)
    if source == "auto":
        source = "babble" if (root / "_babble_").is_dir() else "test"
    if source == "babble":
        files = sorted((root / "_babble_").glob("*.wav"))
        if not files:
            raise DatasetError(f"{root}: no _babble_/*.wav clips (not a synthetic corpus?)")
    elif source in ("val", "test"):
        ds = SpeechCommands(root, source, n_silence=0)
        files = [root / p for p in ds.paths]
        if not files:
            raise DatasetError(f"{root}: the {source} split holds no clips")
    else:
        raise ValueError(f"source must be 'auto', 'babble', 'val' or 'test', got {source!r}")
    if max_clips is not None and max_clips < len(files):
        pick = np.sort(np.random.default_rng(seed).choice(len(files), max_clips, replace=False))
        files = [files[i] for i in pick]
    return [read_mono_16k(f) for f in files]
