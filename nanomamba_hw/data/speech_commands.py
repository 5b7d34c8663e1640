"""Loader for a local Google Speech Commands V2 directory, with the original's 12-class mapping.

Layout read (the standard one, also what :mod:`nanomamba_hw.data.synthetic` writes)::

    root/
      validation_list.txt   word/file.wav per line → split "val"
      testing_list.txt      word/file.wav per line → split "test"; every other file → "train"
      yes/ no/ … bed/ …     one folder per word, 16 kHz mono WAVs
      _background_noise_/   long noise WAVs, the source of the "silence" items

Classes follow model-math.md §8: the ten keywords keep their label (:data:`CLASS_NAMES` order),
every other word folder is "unknown" (11), and "silence" (10) are pseudo-items, each a random
one-second crop of a background-noise file × 0.1, cycling through the files. Clips are padded
with zeros at the end or cut to 16000 samples.

One difference from the original: there the silence crop is redrawn on every load, so no two
evaluations see the same silence items. Here a crop is fixed by ``(seed, split, item index)``,
which makes evaluation reproducible; a training loop that wants fresh silence each epoch can
call :meth:`SpeechCommands.silence_array` with a new seed (cheap: no file is re-read).

Folders whose names start with ``_`` or ``.`` are not words (``_background_noise_``, and the
synthetic corpus's ``_babble_``). Files are read as ``pcm / 32768`` (as torchaudio does); a file
at another sample rate is an error, never resampled silently.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import fit_length, read_wav
from ..config import CLASS_NAMES, CLIP_SAMPLES, SAMPLE_RATE
from ..errors import AudioError, NanoMambaError

KEYWORDS: tuple[str, ...] = CLASS_NAMES[:10]
SILENCE_LABEL: int = CLASS_NAMES.index("silence")
UNKNOWN_LABEL: int = CLASS_NAMES.index("unknown")
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Silence pseudo-items per split in the original recipe.
DEFAULT_SILENCE: dict[str, int] = {"train": 2000, "val": 500, "test": 500}
SILENCE_GAIN = 0.1
BACKGROUND_DIR = "_background_noise_"

_SPLIT_ALIASES = {"training": "train", "validation": "val", "valid": "val", "testing": "test"}


class DatasetError(NanoMambaError):
    """A dataset directory or file that cannot be used (missing, wrong layout, wrong rate)."""


def label_of(word: str) -> int:
    """Class index of a word folder: its own for the ten keywords, else "unknown" (11)."""
    return KEYWORDS.index(word) if word in KEYWORDS else UNKNOWN_LABEL


def read_mono_16k(path: str | Path) -> np.ndarray:
    """Read a WAV as float32 mono at 16 kHz (``pcm / 32768`` for 16-bit), at its own length.

    Raises :class:`DatasetError` naming the file if it is unreadable or not at 16 kHz.
    Several channels are averaged.
    """
    try:
        data, rate, _ = read_wav(path)
    except AudioError as e:
        raise DatasetError(str(e)) from None
    if rate != SAMPLE_RATE:
        raise DatasetError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz "
                           "(resample the dataset first; it is not done silently)")
    x = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def _read_list(path: Path) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {ln.strip().replace("\\", "/") for ln in f if ln.strip()}


def _check_root(root: Path) -> list[str]:
    """Validate the layout and return the word folder names, sorted."""
    if not root.exists():
        raise DatasetError(f"{root}: no such directory")
    if not root.is_dir():
        raise DatasetError(f"{root}: is not a directory")
    words = sorted(e.name for e in os.scandir(root)
                   if e.is_dir() and not e.name.startswith(("_", ".")))
    missing = [f"no {n}" for n in ("validation_list.txt", "testing_list.txt")
               if not (root / n).is_file()]
    if not words:
        missing.append("no word folders (one folder of .wav files per word)")
    if missing:
        raise DatasetError(f"{root}: not a Speech Commands directory: {'; '.join(missing)}")
    return words


class SpeechCommands:
    """One split of a Speech Commands-layout directory as 12-class, one-second clips.

    ``split`` is ``"train"``, ``"val"`` or ``"test"``. ``n_silence`` is the number of silence
    pseudo-items appended after the files; ``None`` takes the value recorded in a synthetic
    corpus's ``corpus.json`` if there is one, else the original's 2000 (train) / 500 (val, test).
    ``seed`` fixes the silence crops (see the module docstring).

    Attributes: ``paths`` (relative POSIX paths; silence items are named ``_silence_/<j>``),
    ``labels`` (int64 array), ``n_files``, ``n_silence``, ``background`` (noise files used).
    Constructing reads no audio; items are read on access, or all at once by :meth:`load_all`.
    """

    def __init__(self, root: str | Path, split: str, *, n_silence: int | None = None,
                 seed: int = 0) -> None:
        self.root = Path(root)
        split = _SPLIT_ALIASES.get(split, split)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.seed = int(seed)
        words = _check_root(self.root)
        val = _read_list(self.root / "validation_list.txt")
        test = _read_list(self.root / "testing_list.txt")

        paths: list[str] = []
        labels: list[int] = []
        for word in words:
            label = label_of(word)
            names = sorted(e.name for e in os.scandir(self.root / word)
                           if e.is_file() and e.name.lower().endswith(".wav"))
            for name in names:
                rel = f"{word}/{name}"
                where = "val" if rel in val else "test" if rel in test else "train"
                if where == split:
                    paths.append(rel)
                    labels.append(label)
        self.n_files = len(paths)

        if n_silence is None:
            n_silence = self._recorded_silence().get(split, DEFAULT_SILENCE[split])
        if n_silence < 0:
            raise ValueError(f"n_silence must be >= 0, got {n_silence}")
        self.n_silence = int(n_silence)
        bg_dir = self.root / BACKGROUND_DIR
        self.background: list[str] = (
            sorted(f"{BACKGROUND_DIR}/{p.name}" for p in bg_dir.glob("*.wav"))
            if bg_dir.is_dir() else [])
        if self.n_silence and not self.background:
            raise DatasetError(f"{self.root}: no {BACKGROUND_DIR}/*.wav files, needed for the "
                               f"silence items (pass n_silence=0 to go without)")
        paths += [f"_silence_/{j}" for j in range(self.n_silence)]
        labels += [SILENCE_LABEL] * self.n_silence
        self.paths: list[str] = paths
        self.labels: np.ndarray = np.asarray(labels, dtype=np.int64)
        self._bg_cache: dict[str, np.ndarray] = {}

    def _recorded_silence(self) -> dict[str, int]:
        manifest = self.root / "corpus.json"
        if not manifest.is_file():
            return {}
        try:
            return {k: int(v) for k, v in json.loads(manifest.read_text())["silence_items"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return {}

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"SpeechCommands({str(self.root)!r}, {self.split!r}: {self.n_files} files + "
                f"{self.n_silence} silence)")

    def is_silence(self, i: int) -> bool:
        """Whether item ``i`` is a silence pseudo-item."""
        return i >= self.n_files

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        """``(float32 samples (16000,), label)`` of item ``i``."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} items")
        if i >= self.n_files:
            return self.silence_clip(i - self.n_files), SILENCE_LABEL
        x = read_mono_16k(self.root / self.paths[i])
        return fit_length(x, CLIP_SAMPLES), int(self.labels[i])

    def _background(self, rel: str) -> np.ndarray:
        if rel not in self._bg_cache:
            self._bg_cache[rel] = read_mono_16k(self.root / rel)
        return self._bg_cache[rel]

    def silence_clip(self, j: int, seed: int | None = None) -> np.ndarray:
        """Silence item ``j``: background file ``j mod #files``, a random 1 s crop × 0.1.

        The crop position depends only on ``(seed, split, j)``; ``seed`` defaults to the
        dataset's own.
        """
        seed = self.seed if seed is None else int(seed)
        noise = self._background(self.background[j % len(self.background)])
        rng = np.random.default_rng([seed, SPLITS.index(self.split), j])
        spare = len(noise) - CLIP_SAMPLES
        start = int(rng.integers(0, spare + 1)) if spare > 0 else 0
        crop = fit_length(noise[start:start + CLIP_SAMPLES], CLIP_SAMPLES)
        return (crop * np.float32(SILENCE_GAIN)).astype(np.float32)

    def silence_array(self, seed: int | None = None) -> np.ndarray:
        """All silence items as float32 ``(n_silence, 16000)``; a new ``seed`` redraws the crops."""
        out = np.zeros((self.n_silence, CLIP_SAMPLES), dtype=np.float32)
        for j in range(self.n_silence):
            out[j] = self.silence_clip(j, seed)
        return out

    def load_all(self, *, progress: bool = True, threads: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Every item in memory: float32 ``(N, 16000)`` samples and int64 ``(N,)`` labels.

        Files are read on ``threads`` threads (libsndfile releases the GIL) behind a tqdm bar.
        """
        x = np.zeros((len(self), CLIP_SAMPLES), dtype=np.float32)

        def read(i: int) -> None:
            x[i] = fit_length(read_mono_16k(self.root / self.paths[i]), CLIP_SAMPLES)

        bar = tqdm(total=len(self), desc=f"loading {self.split}", unit="clip",
                   disable=not progress, leave=False)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for _ in pool.map(read, range(self.n_files)):
                bar.update()
        if self.n_silence:
            x[self.n_files:] = self.silence_array()
            bar.update(self.n_silence)
        bar.close()
        return x, self.labels.copy()

    def class_counts(self) -> dict[str, int]:
        """Items per class name, in :data:`CLASS_NAMES` order."""
        counts = np.bincount(self.labels, minlength=len(CLASS_NAMES))
        return {name: int(c) for name, c in zip(CLASS_NAMES, counts, strict=True)}
