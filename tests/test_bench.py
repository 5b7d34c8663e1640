"""python -m nanomamba_hw.bench end to end on the smallest configuration (no synthesis): the
JSON and markdown it writes, and its errors. The full run is documented in docs/benchmarks.md."""

from __future__ import annotations

import json

from nanomamba_hw import bench, verify
from nanomamba_hw.audio import float_from_pcm
from nanomamba_hw.calib import edge_signals
from nanomamba_hw.checkpoint import load_checkpoint
from nanomamba_hw.engines import VerilatorEngine
from nanomamba_hw.predict import DEFAULT_CKPT
from nanomamba_hw.quantize import params_for


def test_bench_one_configuration(tmp_path):
    rc = bench.main(["--variants", "tiny-dualpcen,matched-dualpcen", "--weights", "int8",
                     "--lanes", "1", "--no-synth", "--clips", "6", "--jobs", "1",
                     "--ckpt", f"matched-dualpcen={tmp_path / 'missing.pt'}",
                     "--out", str(tmp_path), "--work", str(tmp_path / "work")])
    assert rc == 0
    res = json.loads((tmp_path / "benchmarks.json").read_text())
    (hw,) = res["hardware"]
    assert (hw["variant"], hw["weights"], hw["lanes"]) == ("tiny-dualpcen", "int8", 1)
    assert "resources" not in hw                         # --no-synth
    # the harness's count equals the accelerator's own cycle counter (the result's `cycles`)
    ck = load_checkpoint(DEFAULT_CKPT)
    own = VerilatorEngine(ck, params_for(ck)).run(
        float_from_pcm(edge_signals()["white_full_scale"][None]))[0]["cycles"]
    assert hw["cycles_per_clip"] == own
    # a real-time source leaves only the last frame's work after the last sample
    assert 0 < hw["latency_cycles_after_last_sample"] < hw["cycles_per_clip"]
    (ag,) = res["agreement"]
    assert ag["clips"] == 6 and 0 <= ag["top1_agreement"] <= 1
    assert res["skipped"][0]["variant"] == "matched-dualpcen"
    sim = res["simulation"]
    assert sim["amaranth_cycles_per_second"] > 0 and sim["verilator_cycles_per_second"] > 0
    md = (tmp_path / "benchmarks.md").read_text()
    assert "| tiny-dualpcen | int8 | 1 |" in md
    assert "Not measured: matched-dualpcen" in md
    assert res["command"] in md


def test_bench_unknown_variant(tmp_path, capsys):
    assert bench.main(["--variants", "huge", "--out", str(tmp_path)]) == 2
    assert "unknown variant 'huge'" in capsys.readouterr().err


def test_bench_render_shows_the_recorded_verification(tmp_path):
    (tmp_path / "benchmarks.json").write_text(json.dumps(
        {"command": "python -m nanomamba_hw.bench --no-synth", "date": "2026-01-01T00:00:00",
         "machine": "test", "hardware": [], "agreement": []}))
    rec = tmp_path / "verify.json"
    assert verify.main(["--synthetic", "2", "--jobs", "1", "--record", str(rec)]) == 0
    v = json.loads(rec.read_text())
    assert v["clips"] == 7 and v["bit_exact"] == 7 and v["failures"] == []   # 2 + 5 edge signals
    assert v["command"] == "python -m nanomamba_hw.verify --synthetic 2 --jobs 1 --record " + str(rec)
    assert bench.main(["--render", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "benchmarks.md").read_text()
    assert "**7/7 clips bit-exact**" in md and v["command"] in md
