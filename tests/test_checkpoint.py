"""Checkpoint import, our own format, and a specific error for every kind of bad file."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from nanomamba_hw.checkpoint import load_checkpoint, save_checkpoint
from nanomamba_hw.config import CALIBRATION_PROFILES, ModelConfig, variant
from nanomamba_hw.errors import (CheckpointError, CheckpointNotFoundError, CorruptCheckpointError,
                                 NonFiniteWeightError, ShapeMismatchError, UnknownLayoutError)
from nanomamba_hw.reference import NanoMamba



def _published_obj(path):
    return torch.load(path, weights_only=True, map_location="cpu")


@pytest.mark.parametrize("name,layout,frontend,snr,routing,ssm,params", [
    ("NanoMamba-Tiny", "published-logmel-static", "logmel", "static", None,
     (0.05, 0.15, 0.08, 0.20, 0.3), 4634),
    ("NanoMamba-Small", "published-logmel-static", "logmel", "static", None,
     (0.05, 0.15, 0.08, 0.20, 0.3), 12032),
    ("NanoMamba-Tiny-DualPCEN", "published-dualpcen-scalar-ssm", "dualpcen", "ema", "sf",
     (0.15, 0.15, 0.1, 0.1, 0.0), 4957),
])
def test_published_semantics(published_ckpt, name, layout, frontend, snr, routing, ssm, params):
    """Each published file is recognised from its keys with the semantics of seed/README.md."""
    ck = load_checkpoint(published_ckpt(name))
    assert ck.layout == layout
    assert ck.config.name == name
    assert ck.config.frontend == frontend and ck.config.snr_mode == snr
    if routing:
        assert ck.config.routing == routing
    assert ck.config.ssm.as_tuple() == pytest.approx(ssm)
    assert ck.model.num_parameters() == params
    assert ck.class_names[0] == "yes" and ck.class_names[11] == "unknown"
    assert "val_acc_gsc_v2_published" in ck.metrics


def test_round_trip_our_format(tmp_path, published_ckpt):
    src = load_checkpoint(published_ckpt("NanoMamba-Tiny-DualPCEN"))
    dst = tmp_path / "ours.pt"
    save_checkpoint(dst, src.model, provenance={"note": "test"}, metrics={"acc": 0.5})
    back = load_checkpoint(dst)
    assert back.layout == "nanomamba_hw"
    assert back.config == src.config
    assert back.provenance["note"] == "test" and back.metrics["acc"] == 0.5
    x = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        assert torch.equal(src.model(x), back.model(x))
    # our files must load without unpickling arbitrary objects
    torch.load(dst, weights_only=True, map_location="cpu")


def test_round_trip_keeps_calibration(tmp_path):
    model = NanoMamba(variant("matched-dualpcen").replace(ssm=CALIBRATION_PROFILES["light"]))
    save_checkpoint(tmp_path / "m.pt", model)
    back = load_checkpoint(tmp_path / "m.pt")
    assert back.config.ssm == CALIBRATION_PROFILES["light"]
    assert back.model.blocks[0].sa_ssm.eps_max.item() == pytest.approx(0.15)
    assert back.model.num_parameters() == 7402


def test_config_dict_round_trip():
    for cfg in (variant("tiny"), variant("small"), variant("matched-dualpcen")):
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        ModelConfig.from_dict({**variant("tiny").to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        variant("tiny").replace(frontend="mfcc")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_text_file_is_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.pt"
    p.write_text("this is not a checkpoint\n")
    with pytest.raises(CorruptCheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(p)


def test_truncated_checkpoint(tmp_path, published_ckpt):
    data = published_ckpt("NanoMamba-Tiny").read_bytes()
    p = tmp_path / "cut.pt"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(p)


def test_corrupt_member_in_zip(tmp_path, published_ckpt):
    # A valid zip whose pickle is garbage.
    src = published_ckpt("NanoMamba-Tiny")
    p = tmp_path / "garbled.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(p, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = b"\x80\x02garbage" + data[20:]
            zout.writestr(item, data)
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(p)


def test_unknown_layout(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"weights": {"conv.weight": torch.zeros(3)}}, p)
    with pytest.raises(UnknownLayoutError, match="neither"):
        load_checkpoint(p)
    torch.save([torch.zeros(3)], p)
    with pytest.raises(UnknownLayoutError):
        load_checkpoint(p)


def test_missing_tensor_is_named(tmp_path, published_ckpt):
    obj = _published_obj(published_ckpt("NanoMamba-Tiny"))
    del obj["model_state_dict"]["blocks.1.sa_ssm.D"]
    p = tmp_path / "missing.pt"
    torch.save(obj, p)
    with pytest.raises(UnknownLayoutError, match=r"blocks\.1\.sa_ssm\.D"):
        load_checkpoint(p)


def test_wrong_shape_names_key_and_shapes(tmp_path, published_ckpt):
    obj = _published_obj(published_ckpt("NanoMamba-Tiny-DualPCEN"))
    obj["model_state_dict"]["blocks.1.out_proj.weight"] = torch.zeros(16, 20)
    p = tmp_path / "shape.pt"
    torch.save(obj, p)
    with pytest.raises(ShapeMismatchError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert "blocks.1.out_proj.weight" in msg and "(16, 20)" in msg and "(16, 24)" in msg


def test_wrong_shape_in_our_format(tmp_path):
    model = NanoMamba(variant("tiny"))
    save_checkpoint(tmp_path / "t.pt", model)
    obj = torch.load(tmp_path / "t.pt", weights_only=True)
    obj["state_dict"]["classifier.bias"] = torch.zeros(10)
    torch.save(obj, tmp_path / "t.pt")
    with pytest.raises(ShapeMismatchError, match=r"classifier\.bias.*\(10,\).*\(12,\)"):
        load_checkpoint(tmp_path / "t.pt")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights(tmp_path, published_ckpt, bad):
    obj = _published_obj(published_ckpt("NanoMamba-Small"))
    obj["model_state_dict"]["blocks.2.in_proj.weight"][3, 4] = bad
    p = tmp_path / "nan.pt"
    torch.save(obj, p)
    with pytest.raises(NonFiniteWeightError, match=r"blocks\.2\.in_proj\.weight"):
        load_checkpoint(p)


def test_modified_filterbank_is_rejected(tmp_path, published_ckpt):
    obj = _published_obj(published_ckpt("NanoMamba-Tiny"))
    obj["model_state_dict"]["mel_fb"] = obj["model_state_dict"]["mel_fb"] * 2
    p = tmp_path / "fb.pt"
    torch.save(obj, p)
    with pytest.raises(UnknownLayoutError, match="mel_fb"):
        load_checkpoint(p)


def test_errors_share_our_base_class():
    for cls in (CheckpointNotFoundError, CorruptCheckpointError, UnknownLayoutError,
                ShapeMismatchError, NonFiniteWeightError):
        assert issubclass(cls, CheckpointError)


def test_cli_info_and_convert(tmp_path, published_ckpt):
    run = [sys.executable, "-m", "nanomamba_hw.checkpoint"]
    r = subprocess.run(run + ["info", str(published_ckpt("NanoMamba-Tiny-DualPCEN"))],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "4,957 parameters" in r.stdout and "routing sf" in r.stdout
    out = tmp_path / "conv.pt"
    r = subprocess.run(run + ["convert", str(published_ckpt("NanoMamba-Small")), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(published_ckpt("NanoMamba-Small")), load_checkpoint(out)
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (1, 16000)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(a.model(x), b.model(x))
    r = subprocess.run(run + ["info", str(tmp_path / "missing.pt")], capture_output=True, text=True)
    assert r.returncode != 0 and "not found" in r.stderr
