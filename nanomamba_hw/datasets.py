"""``--data synthetic|PATH``: one place that turns the data argument of ``train`` and
``evaluate`` into clips, and describes where they came from for provenance.

- ``synthetic``: the espeak-ng corpus of :mod:`nanomamba_hw.data.synthetic`, built on first use
  and cached (``$NANOMAMBA_CACHE`` or ``~/.cache/nanomamba_hw``) under a hash of its parameters;
- ``PATH``: a Speech Commands-layout directory: the real Speech Commands v0.02, or a synthetic
  corpus built elsewhere (recognised by its ``corpus.json``).

Errors are :class:`~nanomamba_hw.data.DatasetError` with a message naming the path.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import DatasetError, SpeechCommands, speech_source_from_corpus

# Corpus size of the shipped model (model/README.md). 500 utterances per keyword gives
# 4,550 train / 975 val / 975 test clips; the data module's own default (150) is for tests.
DEFAULT_PER_WORD = 500
DEFAULT_CORPUS_SEED = 0
DEFAULT_BABBLE_CLIPS = 160


@dataclass
class DataSource:
    """A resolved ``--data`` argument: a Speech Commands-layout directory and its description."""

    root: Path
    kind: str                          # "synthetic" or "speech_commands"
    spec: str                          # the argument as given
    info: dict = field(default_factory=dict)

    def split(self, name: str, *, seed: int = 0) -> SpeechCommands:
        """One split (silence items fixed by ``seed``, see :class:`SpeechCommands`)."""
        return SpeechCommands(self.root, name, seed=seed)

    def load(self, name: str, *, seed: int = 0, progress: bool = True
             ) -> tuple[np.ndarray, np.ndarray, SpeechCommands]:
        """All clips of a split in memory: float32 (N, 16000), int64 labels, and the dataset."""
        ds = self.split(name, seed=seed)
        x, y = ds.load_all(progress=progress)
        return x, y, ds

    def babble_speech(self, *, avoid: str = "test") -> tuple[list[np.ndarray], str]:
        """Held-out speech for babble noise, and which part of the corpus it comes from.

        A synthetic corpus has ``_babble_/``, spoken by voices of no split. The real Speech
        Commands has no such speech; there the babble comes from a held-out split other than
        ``avoid`` (``val`` when ``avoid`` is ``test``, else ``test``), so a clip is never mixed
        with speech of its own split (see :func:`speech_source_from_corpus`).
        """
        if (self.root / "_babble_").is_dir():
            source = "babble"
        else:
            source = "val" if avoid == "test" else "test"
        return speech_source_from_corpus(self.root, source=source), source

    def describe(self) -> str:
        if self.kind == "synthetic":
            p = self.info.get("params", {})
            return (f"synthetic corpus {self.root} (seed {p.get('seed')}, per_word "
                    f"{p.get('per_word')}, hash {self.info.get('params_hash')})")
        return f"Speech Commands directory {self.root}"


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing_hash(root: Path) -> str:
    """sha256 of the split lists and the sorted file listing: identifies a real dataset copy
    without reading gigabytes of audio."""
    h = hashlib.sha256()
    for name in ("validation_list.txt", "testing_list.txt"):
        p = root / name
        h.update(name.encode())
        if p.is_file():
            h.update(p.read_bytes())
    for d in sorted(e.name for e in os.scandir(root) if e.is_dir()):
        for f in sorted(os.listdir(root / d)):
            h.update(f"{d}/{f}\n".encode())
    return h.hexdigest()


def resolve_data(spec: str, *, per_word: int = DEFAULT_PER_WORD,
                 corpus_seed: int = DEFAULT_CORPUS_SEED, unknown_total: int | None = None,
                 babble_clips: int = DEFAULT_BABBLE_CLIPS, progress: bool = True) -> DataSource:
    """Resolve ``synthetic`` (build or reuse the cached corpus with these parameters) or a path.

    The corpus parameters apply to ``synthetic`` only; a path is used as it is.
    """
    from .data.synthetic import build_corpus, read_manifest

    if spec == "synthetic":
        root = build_corpus(seed=corpus_seed, per_word=per_word, unknown_total=unknown_total,
                            babble_clips=babble_clips, progress=progress)
    else:
        root = Path(spec).expanduser()
        if not root.exists():
            raise DatasetError(f"{root}: no such directory (--data takes 'synthetic' or a "
                               "Speech Commands directory)")
        if not root.is_dir():
            raise DatasetError(f"{root}: is not a directory (--data takes 'synthetic' or a "
                               "Speech Commands directory)")
        # Validates the layout (lists, word folders) with the loader's own messages.
        SpeechCommands(root, "val", n_silence=0)
    root = root.resolve()
    manifest = read_manifest(root)
    if manifest is not None:
        info = {"root": str(root), "kind": "synthetic", "params": manifest.get("params"),
                "params_hash": manifest.get("params_hash"),
                "manifest_sha256": _sha256_file(root / "corpus.json"),
                "counts": {s: sum(c.values()) for s, c in manifest.get("counts", {}).items()}}
        return DataSource(root=root, kind="synthetic", spec=spec, info=info)
    info = {"root": str(root), "kind": "speech_commands", "listing_sha256": _listing_hash(root)}
    return DataSource(root=root, kind="speech_commands", spec=spec, info=info)


def subset_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded random ``limit`` of them in ascending order."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
