"""generated/ holds the Verilog of the default checkpoint; this fails when it is stale."""

from nanomamba_hw.generate import VERILOG, default_verilog


def test_generated_verilog_is_current():
    assert VERILOG.exists(), "generated/nanomamba_accel.v missing: python -m nanomamba_hw.generate"
    assert VERILOG.read_text() == default_verilog(), (
        "generated/nanomamba_accel.v is stale: run python -m nanomamba_hw.generate")
