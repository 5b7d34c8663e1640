"""build: errors, the Vivado plan for both front-end variants, and one full build with
synthesis and the Verilator cycle measurement (its report's schema)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanomamba_hw.build import main as build_main
from nanomamba_hw.synth import SynthesisError, abc9_setup, summarize_cells, synth_xilinx

REPORT_KEYS = {"board", "part", "clock_hz", "variant", "lanes", "weights_bits", "checkpoint",
               "formats", "resources", "timing", "cycles", "cycles_per_clip",
               "latency_cycles_after_last_sample", "command", "files"}
RESOURCE_KEYS = {"LUT", "FF", "DSP48E1", "RAMB36E1", "RAMB18E1", "CARRY4", "LUTRAM"}


def test_unknown_board_lists_the_known_ones(tmp_path, capsys):
    assert build_main(["--board", "zedboard", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown board 'zedboard'" in err and "arty_a7" in err and "arty_a7_100" in err


def test_missing_checkpoint(tmp_path, capsys):
    assert build_main(["--ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_synthesis_failure_shows_yosys_message(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input a, output b);\n  assign b = a +;\nendmodule\n")
    with pytest.raises(SynthesisError) as e:
        synth_xilinx([bad], "bad", tmp_path / "w")
    assert "ERROR" in str(e.value) and "syntax error" in str(e.value)


def test_abc9_delay_target_is_half_the_period():
    assert "abc9.D 5000" in abc9_setup(100e6) and "abc9.D 10000" in abc9_setup(50e6)
    assert "abc9.script.flow3" in abc9_setup(100e6)
    with pytest.raises(ValueError):
        abc9_setup(0)


def test_distributed_ram_counts_its_lut_sites():
    """A RAM32M/RAM64M cell occupies the four LUTs of a SLICEM, a RAM64X1D two, an SRL one
    (Xilinx 7-series libraries guide): LUT as memory counts sites, not cells."""
    cells = {"LUT6": 5, "LUT2": 1, "RAM64M": 2, "RAM32M": 1, "RAM64X1D": 1, "SRLC32E": 3,
             "FDRE": 7, "INV": 4}
    r = summarize_cells(cells)
    assert r["LUT"] == 5 + 1 + 4 and r["FF"] == 7          # an INV is a LUT1
    assert r["LUTRAM"] == 2 * 4 + 4 + 2 + 3


def test_inverters_count_as_luts(tmp_path):
    """Four registered inverters need four LUTs on a 7-series device; Yosys maps them to INV
    cells (a one-input LUT), which the LUT count must include."""
    v = tmp_path / "inv.v"
    v.write_text("module inv(input clk, input [3:0] d, output reg [3:0] q);\n"
                 "  reg [3:0] r;\n"
                 "  always @(posedge clk) begin r <= d; q <= ~r; end\n"
                 "endmodule\n")
    res = synth_xilinx([v], "inv", tmp_path / "synth")
    assert res.cells.get("INV", 0) > 0          # the case this test is about
    assert res.resources["LUT"] == 4 and res.resources["FF"] == 8


def _plan_files(out: Path):
    viv = out / "vivado"
    return [viv / "nanomamba_top.v", viv / "nanomamba_top.xdc", viv / "nanomamba_top.tcl",
            viv / "build_nanomamba_top.sh"]


@pytest.mark.parametrize("which", ["default", "logmel"])
def test_no_synth_writes_verilog_and_vivado_plan(tmp_path, which, published_ckpt):
    args = ["--board", "arty_a7", "--out", str(tmp_path), "--no-synth", "--no-sim"]
    if which == "logmel":
        args += ["--ckpt", str(published_ckpt("NanoMamba-Tiny"))]
    assert build_main(args) == 0
    for f in [tmp_path / "nanomamba_accel.v", tmp_path / "fixed.json", *_plan_files(tmp_path)]:
        assert f.exists() and f.stat().st_size > 0, f
    assert "module nanomamba_accel" in (tmp_path / "nanomamba_accel.v").read_text()
    xdc = (tmp_path / "vivado" / "nanomamba_top.xdc").read_text()
    assert "E3" in xdc                                   # the Arty's 100 MHz clock pin
    rep = json.loads((tmp_path / "report.json").read_text())
    assert REPORT_KEYS <= set(rep)
    assert rep["resources"] is None and rep["part"] == "xc7a35ticsg324-1L"
    assert rep["variant"] == ("NanoMamba-Tiny" if which == "logmel" else "NanoMamba-Tiny-DualPCEN")


def test_full_build_with_synthesis(tmp_path):
    """The main job: default checkpoint, synthesis and the Verilator cycle measurement."""
    assert build_main(["--board", "arty_a7", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    assert REPORT_KEYS <= set(rep)
    assert RESOURCE_KEYS <= set(rep["resources"])
    assert rep["resources"]["LUT"] > 1000 and rep["resources"]["DSP48E1"] >= 1
    # the LUT mapping's delay target is half the 100 MHz period
    assert "abc9.script.flow3" in rep["synth_script"] and "abc9.D 5000" in rep["synth_script"]
    assert "Yosys script:" in (tmp_path / "report.md").read_text()
    t = rep["timing"]
    assert t["logic_delay_ns"] > 0 and t["fmax_estimate_mhz"] > 0
    assert "pre-placement" in t["method"] and "logic-only" in t["method"]
    c = rep["cycles"]
    assert c["bit_exact_with_fixed_model"] is True
    assert rep["cycles_per_clip"] > rep["latency_cycles_after_last_sample"] > 100_000
    assert rep["clock_hz"] == 100e6
    md = (tmp_path / "report.md").read_text()
    assert "LUT" in md and "logic-only" in md
    r = rep["resources"]
    assert f"Slice LUTs\"): {r['LUT'] + r['LUTRAM']}" in md


def test_latency_is_measured_only_where_the_front_end_keeps_up():
    """measure_latency doubles the sample interval until no sample is held off (a stand-in
    model whose front end needs 100 cycles per sample and adds 1,000 cycles at the end)."""
    import numpy as np

    from nanomamba_hw.build import MEASURE_INTERVAL, BuildError, measure_latency

    class Model:
        def run(self, pcm, interval):
            n, k = pcm.shape[-1], max(interval + 1, 100)
            span = (n - 1) * k + 1                      # first sample offered → last taken
            return [(7, span + 1000 + 50 * (k > interval + 1), 1000 + 50 * (k > interval + 1))]

    payload, cycles, latency, interval = measure_latency(Model(), np.zeros((1, 16), np.int16),
                                                         sample_rate=16000)
    assert MEASURE_INTERVAL < 99 and interval == 2 * MEASURE_INTERVAL >= 99
    assert (payload, latency, cycles) == (7, 1000, 15 * (interval + 1) + 1 + 1000)
    # a front end slower than real time (100 cycles per sample > 100 MHz / 1.6 MHz) is an error
    with pytest.raises(BuildError, match="holds samples off"):
        measure_latency(Model(), np.zeros((1, 16), np.int16), sample_rate=1_600_000)
