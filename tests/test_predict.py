"""predict CLI: JSON contract on real clips, WAV edge cases, errors that name the file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from nanomamba_hw.audio import load_clip, write_wav
from nanomamba_hw.predict import main as predict_main



def _run(args, capsys):
    code = predict_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, [json.loads(l) for l in out.splitlines() if l.startswith("{")], out, err


@pytest.fixture(scope="module")
def tiny_dp(published_ckpt):
    return published_ckpt("NanoMamba-Tiny-DualPCEN")


def test_json_contract_matches_reference(published_ckpt, seed_dir, capsys):
    for name in ("NanoMamba-Tiny", "NanoMamba-Small", "NanoMamba-Tiny-DualPCEN"):
        code, rows, _, _ = _run(["--json", "--ckpt", published_ckpt(name), seed_dir / "audio"], capsys)
        assert code == 0 and len(rows) == 6
        for row in rows:
            assert set(row) == {"file", "index", "label", "logits"}
            word = row["file"].rsplit("/", 1)[-1][:-4]
            ref = np.load(seed_dir / "reference" / name / f"{word}.npz")["logits"]
            assert len(row["logits"]) == 12 and all(isinstance(v, float) for v in row["logits"])
            assert np.abs(np.array(row["logits"]) - ref).max() < 1e-4
            assert row["index"] == int(ref.argmax())
            assert row["label"] == ["yes", "no", "up", "down", "left", "right", "on", "off",
                                    "stop", "go", "silence", "unknown"][row["index"]]


def test_module_entry_point_and_text_output(tiny_dp, seed_clip):
    r = subprocess.run([sys.executable, "-m", "nanomamba_hw.predict", "--ckpt", str(tiny_dp),
                        str(seed_clip("yes"))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\t")[1] == "yes"


def _logits(args, capsys):
    code, rows, _, err = _run(["--json", *args], capsys)
    return code, rows, err


def test_resampled_8khz(tmp_path, tiny_dp, seed_clip, capsys):
    x, _ = sf.read(seed_clip("yes"), dtype="int16")
    p = tmp_path / "yes8k.wav"
    sf.write(p, x[::2], 8000, subtype="PCM_16")
    code, rows, err = _logits(["--ckpt", tiny_dp, p], capsys)
    assert code == 0 and "resampled from 8000 Hz to 16000 Hz" in err
    assert rows[0]["label"] == "yes"
    assert len(load_clip(p).samples) == 16000


def test_stereo_mixes_down(tmp_path, tiny_dp, seed_clip, capsys):
    x, _ = sf.read(seed_clip("up"), dtype="int16")
    p = tmp_path / "st.wav"
    sf.write(p, np.stack([x, x], axis=1), 16000, subtype="PCM_16")
    _, mono, _ = _logits(["--ckpt", tiny_dp, seed_clip("up")], capsys)
    code, st, err = _logits(["--ckpt", tiny_dp, p], capsys)
    assert code == 0 and "mixed 2 channels down to mono" in err
    assert np.allclose(mono[0]["logits"], st[0]["logits"], atol=1e-6)


def test_short_clip_is_zero_padded_at_end(tmp_path, tiny_dp, seed_clip, capsys):
    x, _ = sf.read(seed_clip("go"), dtype="int16")
    half, padded = tmp_path / "half.wav", tmp_path / "padded.wav"
    write_wav(half, x[:8000])
    write_wav(padded, np.concatenate([x[:8000], np.zeros(8000, np.int16)]))
    code, rows, err = _logits(["--ckpt", tiny_dp, half, padded], capsys)
    assert code == 0 and "8000 samples zero-padded to 16000" in err
    assert rows[0]["logits"] == rows[1]["logits"]


def test_long_clip_keeps_first_second(tmp_path, tiny_dp, seed_clip, capsys):
    x, _ = sf.read(seed_clip("stop"), dtype="int16")
    long = tmp_path / "long.wav"
    write_wav(long, np.concatenate([x, np.full(16000, 1000, np.int16)]))
    code, rows, err = _logits(["--ckpt", tiny_dp, long, seed_clip("stop")], capsys)
    assert code == 0 and "32000 samples cut to 16000" in err
    assert rows[0]["logits"] == rows[1]["logits"]


@pytest.mark.parametrize("subtype,tol", [("PCM_24", 1e-4), ("FLOAT", 1e-4)])
def test_24bit_and_float_wavs(tmp_path, tiny_dp, seed_clip, capsys, subtype, tol):
    x, _ = sf.read(seed_clip("no"), dtype="float32")
    p = tmp_path / f"{subtype}.wav"
    sf.write(p, x, 16000, subtype=subtype)
    code, rows, err = _logits(["--ckpt", tiny_dp, p, seed_clip("no")], capsys)
    assert code == 0 and f"sample format {subtype}" in err
    # 16-bit samples are exact in 24-bit and float, so the answer must not move.
    assert np.abs(np.subtract(rows[0]["logits"], rows[1]["logits"])).max() < tol


def test_bad_files_reported_others_processed(tmp_path, tiny_dp, seed_clip, capsys):
    txt = tmp_path / "fake.wav"
    txt.write_text("RIFF? no, just text\n")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.int16), 16000, subtype="PCM_16")
    code, rows, out, err = _run(["--json", "--ckpt", tiny_dp, txt, seed_clip("yes"),
                                 tmp_path / "absent.wav", empty], capsys)
    assert code == 1
    assert [r["label"] for r in rows] == ["yes"]
    assert f"{txt}: not a readable WAV file" in err
    assert "absent.wav: no such file" in err
    assert "empty.wav: WAV file holds no samples" in err


def test_bad_checkpoint_and_engine_exit_nonzero(tmp_path, tiny_dp, seed_clip, capsys):
    code, _, _, err = _run(["--ckpt", tmp_path / "none.pt", seed_clip("yes")], capsys)
    assert code == 2 and "not found" in err
    code, _, _, err = _run(["--ckpt", tiny_dp, "--engine", "quantum", seed_clip("yes")], capsys)
    assert code == 2 and "unknown engine 'quantum'" in err and "float" in err


def test_edge_signals_run(tmp_path, tiny_dp, capsys):
    t = np.arange(16000)
    sigs = {"silence": np.zeros(16000, np.int16),
            "square": np.where((t // 40) % 2 == 0, 32767, -32768).astype(np.int16),
            "dc": np.full(16000, 16384, np.int16),
            "impulse": np.eye(1, 16000, 8000, dtype=np.int16)[0] * 32767}
    for name, x in sigs.items():
        write_wav(tmp_path / f"{name}.wav", x)
    code, rows, _, _ = _run(["--json", "--ckpt", tiny_dp, tmp_path], capsys)
    assert code == 0 and len(rows) == 4
    assert all(np.isfinite(r["logits"]).all() for r in rows)
