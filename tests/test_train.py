"""Training (nanomamba_hw.train): the recipe's pieces, a short real run on a tiny synthetic
corpus that must learn, the checkpoint and history it writes, the CLI's error paths, and
quantization-aware fine-tuning (nanomamba_hw.qat, --qat-epochs, --init)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from nanomamba_hw import qat, train
from nanomamba_hw.checkpoint import load_checkpoint
from nanomamba_hw.config import variant
from nanomamba_hw.data import SpeechCommands, synthetic
from nanomamba_hw.engines import make_engine
from nanomamba_hw.fixed.linear import QLinear
from nanomamba_hw.fixed.ops import Fmt
from nanomamba_hw.reference import NanoMamba

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


# --------------------------------------------------------------------------------------------
# Quantization-aware fine-tuning (--qat-epochs, --init; nanomamba_hw.qat)


def _random_model(seed=0):
    torch.manual_seed(seed)
    return NanoMamba(variant("tiny-dualpcen")).eval()


def _fixed_int8_roundtrip(W: np.ndarray) -> float:
    """Largest |Wq·scale − W| of the fixed model's nearest-rounding INT8 quantization, in units
    of the row's step max|W_row|/127 (the QLinear code, not nanomamba_hw.qat)."""
    q = QLinear.from_float("w", W, None, Fmt(16, 10), Fmt(24, 10), 8)
    step = np.abs(W).max(axis=1, keepdims=True) / 127
    return float(np.max(np.abs(q.w * q.scale[:, None] - W) / step))


def test_fake_quant_is_the_snapped_model_with_a_straight_through_gradient():
    model = _random_model()
    names = list(model.state_dict())
    params = list(model.parameters())
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 16000), np.float32) * 0.1)
    with torch.no_grad():
        y_float = model(x)
    snapped = qat.snap_(copy.deepcopy(model))
    with qat.fake_quant(model):
        y_fq = model(x)
        y_fq.square().sum().backward()
    y_snap = snapped(x)
    y_snap.square().sum().backward()
    assert torch.equal(y_fq.detach(), y_snap.detach())
    assert not torch.equal(y_fq.detach(), y_float)           # the weights were off the grid
    # straight through: the float weights get exactly the snapped model's weight gradients
    for (name, m), (_, ms) in zip(qat.quantized_layers(model), qat.quantized_layers(snapped)):
        assert torch.allclose(m.weight.grad, ms.weight.grad, rtol=1e-5, atol=1e-8), name
    # leaving the context restores the plain float model: same parameters, names and output
    assert list(model.state_dict()) == names
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    with torch.no_grad():
        assert torch.equal(model(x), y_float)


def test_snap_puts_every_quantized_weight_on_the_int8_grid():
    model = _random_model(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert max(qat.grid_error(model).values()) > 0.4
    qat.snap_(model)
    assert max(qat.grid_error(model).values()) < 1e-4
    quantized = {f"{n}.weight" for n, _ in qat.quantized_layers(model)}
    assert len(quantized) == 2 + 6 * 2     # patch_proj, classifier; 6 per block
    for k, v in model.state_dict().items():
        if k in quantized:
            rows = v.reshape(v.shape[0], -1)
            # the row maximum keeps its value; the fixed model reproduces every weight
            assert torch.equal(rows.abs().amax(1), before[k].reshape(v.shape[0], -1).abs().amax(1))
            assert _fixed_int8_roundtrip(rows.double().numpy()) < 1e-4, k
        else:   # biases, norms, PCEN, SNR estimator and SSM parameters stay float
            assert torch.equal(v, before[k]), k
    again = qat.snap_(copy.deepcopy(model))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  again.state_dict().values()))


@needs_espeak
def test_qat_run_writes_an_int8_exact_checkpoint(corpus, tmp_path, capsys):
    out = tmp_path / "qat.pt"
    # 8 normal epochs then 2 QAT epochs, in one command (~8 s on one thread)
    assert train.main(["--data", str(corpus), "--epochs", "8", "--qat-epochs", "2",
                       "--qat-lr", "1e-3", "--batch-size", "8", "--lr", "1e-2",
                       "--no-noise-aug", "--seed", "2", "--threads", "1", "--out", str(out),
                       "--quiet"]) == 0
    log = capsys.readouterr().out
    assert "qat 2/2" in log and "snapped INT8-exact" in log
    ck = load_checkpoint(out)
    assert max(qat.grid_error(ck.model).values()) < 1e-4
    for name, m in qat.quantized_layers(ck.model):
        W = m.weight.detach().double().numpy().reshape(m.weight.shape[0], -1)
        assert _fixed_int8_roundtrip(W) < 1e-4, name

    hist = json.loads(train.history_path(out).read_text())["history"]
    assert [h.get("phase") for h in hist] == [None] * 8 + ["qat", "qat"]
    q = ck.metrics["qat"]
    assert q["epochs"] == 2 and q["lr"] == 1e-3 and q["best_qat_epoch"] in (1, 2)
    assert ck.metrics["best_epoch"] in (9, 10)                 # a QAT epoch is kept
    assert ck.metrics["val_acc"] == pytest.approx(max(h["val_acc"] for h in hist[8:]), abs=1e-4)
    assert ck.provenance["recipe"]["qat"]["epochs"] == 2
    # sane: QAT keeps what the float model learned (val of the snapped model vs the float start)
    assert all(np.isfinite(h["train_loss"]) and h["train_loss"] < 2.5 for h in hist[8:])
    assert ck.metrics["val_acc"] >= q["start_val_acc"] - 0.15   # 38 val clips; seeds 0-3: -0.08..+0.03
    x, y = SpeechCommands(corpus, "train").load_all(progress=False)
    pred = np.array([r["index"] for r in make_engine("float", ck).run(x)])
    assert float((pred == y).mean()) > 0.25

    # QAT only, from a checkpoint: --init CKPT --epochs 0; the snapped grid is kept
    out2 = tmp_path / "qat2.pt"
    assert train.main(["--data", str(corpus), "--init", str(out), "--epochs", "0",
                       "--qat-epochs", "1", "--batch-size", "32", "--noise-aug",
                       "--threads", "1", "--out", str(out2), "--quiet"]) == 0
    ck2 = load_checkpoint(out2)
    assert max(qat.grid_error(ck2.model).values()) < 1e-4
    assert ck2.provenance["init"]["checkpoint"] == str(out)
    assert ck2.provenance["init"]["metrics"]["qat"]["epochs"] == 2
    assert ck2.metrics["epochs_run"] == 1 and ck2.metrics["qat"]["main_best_epoch"] is None
    h2 = json.loads(train.history_path(out2).read_text())["history"]
    assert h2[0]["snr_db"] == [-5.0, 10.0] and h2[0]["noise_share"] == 0.5


def test_qat_option_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--epochs", "0"])                           # nothing to start from
    assert e.value.code == 2 and "--epochs must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--qat-epochs", "-1"])
    missing = tmp_path / "none.pt"
    assert train.main(["--init", str(missing), "--epochs", "0", "--qat-epochs", "1",
                       "--data", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
