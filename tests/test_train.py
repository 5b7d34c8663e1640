"""Training (nanomamba_hw.train): the recipe's pieces, a short real run on a tiny synthetic
corpus that must learn, the checkpoint and history it writes, and the CLI's error paths."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nanomamba_hw import train
from nanomamba_hw.checkpoint import load_checkpoint
from nanomamba_hw.data import SpeechCommands, synthetic
from nanomamba_hw.engines import make_engine

OK, WHY = synthetic.espeak_status()
needs_espeak = pytest.mark.skipif(not OK, reason=f"espeak-ng unavailable: {WHY}")

# A tiny corpus: 16 utterances per keyword → 11 train clips per keyword, 143 train clips in all.
TINY = dict(per_word=16, unknown_total=32, babble_clips=12, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not OK:
        pytest.skip(f"espeak-ng unavailable: {WHY}")
    return synthetic.build_corpus(tmp_path_factory.mktemp("train") / "corpus", **TINY)


def test_curriculum_is_the_original_at_30_epochs():
    got = [train.curriculum(e, 30) for e in range(30)]
    for e in range(3):
        assert got[e] == (0.0, None)
    for e in range(3, 10):
        assert got[e] == (pytest.approx(0.5 * (e - 3) / 7), (5.0, 15.0))
    for e in range(10, 20):
        assert got[e] == (0.5, (0.0, 10.0))
    for e in range(20, 30):
        assert got[e] == (0.5, (-5.0, 10.0))


def test_curriculum_scales_with_the_run_length():
    # 60 epochs: boundaries 6, 20, 40 (1/10, 1/3, 2/3 of the run).
    phases = [train.curriculum(e, 60)[1] for e in range(60)]
    assert phases[:6] == [None] * 6
    assert phases[6:20] == [(5.0, 15.0)] * 14
    assert phases[20:40] == [(0.0, 10.0)] * 20
    assert phases[40:] == [(-5.0, 10.0)] * 20
    assert train.curriculum(6, 60)[0] == 0.0 and train.curriculum(19, 60)[0] < 0.5
    for epochs in (1, 2, 3, 7):  # degenerate lengths still give valid phases
        for e in range(epochs):
            share, _ = train.curriculum(e, epochs)
            assert 0.0 <= share <= 0.5


def test_augment_shift_zero_fill_gain_and_noise():
    rng = np.random.default_rng(0)
    x = np.ones((200, 16000), np.float32)
    y = train.augment(x, rng)
    assert y.shape == x.shape and y.dtype == np.float32
    zeros = (np.abs(y) < 0.05).sum(axis=1)          # zero-filled samples per clip
    assert zeros.max() <= 1600 and 600 < zeros.mean() < 1000   # |U{-1600..1599}| ≈ 800
    level = np.median(y, axis=1)
    assert level.min() >= 0.8 - 0.02 and level.max() <= 1.2 + 0.02
    noisy = y.std(axis=1, where=np.abs(y) > 0.05) > 0.003
    assert 0.15 < noisy.mean() < 0.45                # p = 0.3 Gaussian noise


@needs_espeak
def test_short_run_learns_and_writes_a_checkpoint(corpus, tmp_path, capsys):
    out = tmp_path / "tiny.pt"
    # Clean, small batches and a higher lr so that ~200 steps (~15 s on one thread) learn.
    code = train.main(["--data", str(corpus), "--epochs", "12", "--batch-size", "8",
                       "--lr", "1e-2", "--no-noise-aug", "--seed", "2", "--threads", "1",
                       "--out", str(out), "--quiet"])
    assert code == 0
    log = capsys.readouterr().out
    assert "epoch 12/12" in log and "best val acc" in log

    hist = json.loads(train.history_path(out).read_text())
    losses = [h["train_loss"] for h in hist["history"]]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.4, losses   # the loss falls

    ck = load_checkpoint(out)
    m = ck.metrics
    assert m["best_epoch"] >= 1 and 0.0 <= m["val_acc"] <= 1.0
    assert m["val_acc"] == pytest.approx(max(h["val_acc"] for h in hist["history"]), abs=1e-4)
    assert m["train_wall_seconds"] > 0
    p = ck.provenance
    for key in ("command", "data", "seed", "git_commit", "torch", "date", "recipe", "history"):
        assert key in p
    assert p["seed"] == 2 and p["data"]["kind"] == "synthetic"
    assert p["data"]["params"]["per_word"] == TINY["per_word"]
    assert p["recipe"]["lr"] == 1e-2 and p["recipe"]["label_smoothing"] == 0.1
    assert p["recipe"]["noise_aug"] is False and p["recipe"]["batch_size"] == 8

    # The kept (best-on-val) model classifies its own training clips far above chance (1/12);
    # seeds 0-3 of this setup give 35-58 %.
    x, y = SpeechCommands(corpus, "train").load_all(progress=False)
    pred = np.array([r["index"] for r in make_engine("float", ck).run(x)])
    acc = float((pred == y).mean())
    assert acc > 0.25, f"train accuracy {acc:.2f}"


@needs_espeak
def test_noise_aug_run_records_the_curriculum(corpus, tmp_path):
    out = tmp_path / "noisy.pt"
    assert train.main(["--data", str(corpus), "--epochs", "3", "--batch-size", "32",
                       "--noise-aug", "--threads", "1", "--out", str(out), "--quiet"]) == 0
    hist = json.loads(train.history_path(out).read_text())
    assert [h["snr_db"] for h in hist["history"]] == [None, [0.0, 10.0], [-5.0, 10.0]]
    cur = load_checkpoint(out).provenance["recipe"]["noise_curriculum"]
    assert cur["babble_speech"] == "babble" and len(cur["per_epoch"]) == 3


def test_bad_data_path_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "no_such_dataset"
    assert train.main(["--data", str(missing), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and str(missing) in err and "no such directory" in err
    (tmp_path / "empty").mkdir()
    assert train.main(["--data", str(tmp_path / "empty"), "--epochs", "1"]) == 2
    assert "not a Speech Commands directory" in capsys.readouterr().err


def test_unknown_variant_lists_the_known_ones(capsys):
    assert train.main(["--variant", "huge", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown variant 'huge'" in err
    for name in ("tiny", "small", "tiny-dualpcen", "matched-dualpcen"):
        assert name in err


def test_cli_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nanomamba_hw.train", "--data",
                        str(tmp_path / "nowhere"), "--epochs", "1"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode != 0
    assert "nowhere: no such directory" in r.stderr and "Traceback" not in r.stderr
