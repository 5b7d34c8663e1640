"""Shared fixtures: paths to ../shared/seed (skipped with a reason when absent) and helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SEED = SHARED / "seed"
PUBLISHED = ("NanoMamba-Tiny", "NanoMamba-Small", "NanoMamba-Tiny-DualPCEN")
CLIPS = ("yes", "no", "up", "down", "go", "stop")


def _need_seed() -> Path:
    if not (SEED / "checkpoints").is_dir():
        pytest.skip(f"published NanoMamba seed data not found at {SEED} (../shared beside the repo)")
    return SEED


@pytest.fixture(scope="session")
def seed_dir() -> Path:
    return _need_seed()


@pytest.fixture(scope="session")
def published_ckpt(seed_dir):
    """Path of a published checkpoint by short name, e.g. published_ckpt('NanoMamba-Tiny')."""
    def get(name: str) -> Path:
        return seed_dir / "checkpoints" / f"{name}.pt"
    return get


@pytest.fixture(scope="session")
def seed_clip(seed_dir):
    def get(word: str) -> Path:
        return seed_dir / "audio" / f"{word}.wav"
    return get
