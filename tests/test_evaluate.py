"""Evaluation (nanomamba_hw.evaluate): the three outputs and their keys, clean accuracy equal to
a direct computation through make_engine, per-clip noise that is fixed by the seed, and the
CLI's error paths."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from nanomamba_hw import evaluate
from nanomamba_hw.checkpoint import load_checkpoint, save_checkpoint
from nanomamba_hw.config import variant
from nanomamba_hw.data import NOISE_TYPES, SpeechCommands, speech_source_from_corpus, synthetic
from nanomamba_hw.datasets import subset_indices
from nanomamba_hw.engines import make_engine
from nanomamba_hw.reference import NanoMamba

OK, WHY = synthetic.espeak_status()
pytestmark = pytest.mark.skipif(not OK, reason=f"espeak-ng unavailable: {WHY}")

TINY = dict(per_word=5, unknown_total=10, babble_clips=8, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synthetic.build_corpus(tmp_path_factory.mktemp("eval") / "corpus", **TINY)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A randomly initialised Tiny-DualPCEN whose predictions are not all one class."""
    torch.manual_seed(1)
    model = NanoMamba(variant("tiny-dualpcen"))
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    path = tmp_path_factory.mktemp("ckpt") / "random.pt"
    save_checkpoint(path, model, provenance={"note": "random init, for tests"})
    return path


def run(args, capsys):
    code = evaluate.main([*map(str, args), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_outputs_and_clean_accuracy_match_the_engine(corpus, ckpt, tmp_path, capsys):
    out = tmp_path / "ev"
    code, stdout, _ = run(["--ckpt", ckpt, "--data", corpus, "--limit", 12, "--seed", 5,
                           "--noise", "white,babble", "--snr", "-5,10", "--out", out], capsys)
    assert code == 0, stdout
    for name in ("eval.json", "eval.md", "accuracy_vs_snr.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "accuracy_vs_snr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    r = json.loads((out / "eval.json").read_text())
    for key in ("checkpoint", "engine", "data", "split", "n_clips", "seed", "class_names",
                "clean", "noise_types", "snrs_db", "noisy", "noisy_mean", "noise"):
        assert key in r
    assert r["split"] == "test" and r["engine"] == "float" and r["n_clips"] == 12
    assert r["noise_types"] == ["white", "babble"] and r["snrs_db"] == [-5.0, 10.0]
    assert set(r["noisy"]) == {"white", "babble"} and set(r["noisy"]["white"]) == {"-5", "10"}
    assert r["noise"]["babble_speech"] == "babble"
    clean = r["clean"]
    assert set(clean) >= {"accuracy", "correct", "per_class", "confusion"}
    conf = np.array(clean["confusion"])
    assert conf.shape == (12, 12) and conf.sum() == 12
    assert list(clean["per_class"]) == r["class_names"]

    # The same clips straight through make_engine("float", ...).
    ds = SpeechCommands(corpus, "test")
    pick = subset_indices(len(ds), 12, 5)
    x = np.stack([ds[int(i)][0] for i in pick])
    pred = np.array([res["index"] for res in make_engine("float", load_checkpoint(ckpt)).run(x)])
    direct = float((pred == ds.labels[pick]).mean())
    assert clean["accuracy"] == pytest.approx(direct, abs=1e-12)
    assert len(set(pred)) > 1   # a meaningful comparison, not one constant class

    md = (out / "eval.md").read_text()
    assert "Clean accuracy" in md and "| white |" in md and "accuracy_vs_snr.png" in md
    assert "Per-class" in md and "confusion" in md
    assert "clean accuracy" in stdout and "white" in stdout


def test_noise_is_per_clip_and_reproducible(corpus, ckpt, tmp_path, capsys):
    speech = speech_source_from_corpus(corpus)
    for kind in NOISE_TYPES:
        a = evaluate.clip_noise(kind, 3, 0, speech)
        assert np.array_equal(a, evaluate.clip_noise(kind, 3, 0, speech))
        assert not np.array_equal(a, evaluate.clip_noise(kind, 4, 0, speech))
        assert not np.array_equal(a, evaluate.clip_noise(kind, 3, 1, speech))
    args = ["--ckpt", ckpt, "--data", corpus, "--limit", 6, "--noise", "pink", "--snr", "0"]
    assert run([*args, "--out", tmp_path / "a"], capsys)[0] == 0
    assert run([*args, "--out", tmp_path / "b"], capsys)[0] == 0
    a, b = (json.loads((tmp_path / d / "eval.json").read_text()) for d in "ab")
    assert a["noisy"] == b["noisy"] and a["clean"] == b["clean"]


def test_clean_only(corpus, ckpt, tmp_path, capsys):
    code, _, _ = run(["--ckpt", ckpt, "--data", corpus, "--split", "val", "--noise", "none",
                      "--out", tmp_path / "c"], capsys)
    assert code == 0
    r = json.loads((tmp_path / "c" / "eval.json").read_text())
    assert r["noise_types"] == [] and r["noisy"] == {} and r["split"] == "val"
    assert r["n_clips"] == len(SpeechCommands(corpus, "val"))


def test_bad_data_path_is_a_clear_error(ckpt, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code, _, err = run(["--ckpt", ckpt, "--data", missing, "--out", tmp_path / "x"], capsys)
    assert code == 2 and f"{missing}: no such directory" in err
    assert not (tmp_path / "x").exists()


def test_other_cli_errors(corpus, ckpt, tmp_path, capsys):
    code, _, err = run(["--ckpt", tmp_path / "missing.pt", "--data", corpus], capsys)
    assert code == 2 and "checkpoint not found" in err
    code, _, err = run(["--ckpt", ckpt, "--data", corpus, "--engine", "quantum"], capsys)
    assert code == 2 and "unknown engine 'quantum'" in err
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--ckpt", str(ckpt), "--data", str(corpus), "--noise", "rain"])
    assert e.value.code == 2 and "unknown noise type" in capsys.readouterr().err


def test_cli_exit_code(ckpt, tmp_path):
    r = subprocess.run([sys.executable, "-m", "nanomamba_hw.evaluate", "--ckpt", str(ckpt),
                        "--data", str(tmp_path / "nowhere"), "--quiet"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode != 0
    assert "nowhere: no such directory" in r.stderr and "Traceback" not in r.stderr
