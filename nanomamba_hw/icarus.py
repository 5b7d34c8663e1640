"""Run the emitted Verilog of an accelerator with Icarus Verilog: the fallback of
:mod:`~nanomamba_hw.verilator` where Verilator is not installed (Debian: ``apt-get install
iverilog``; ``install.sh`` installs it when run as root).

The same design as Verilator's (:func:`~nanomamba_hw.verilator.sim_wrapper` around the
accelerator, plus one assignment per module at time 0: :func:`wake_combinational`) under a Verilog testbench (:data:`TESTBENCH`) that does what the Verilator C++
harness does, cycle for cycle: four cycles of reset and two more, then for each clip a sample
offered on ``pcm`` whenever the previous one was taken ``interval`` cycles ago or more, and the
result taken as soon as it is valid. It prints the same result lines, from the same clip file
(:mod:`~nanomamba_hw.rtl_sim`), so the cycle counts equal Verilator's. The compiled ``.vvp``
is cached by a hash of the design and the testbench. Icarus compiles the accelerator in under
a second but simulates it over a hundred times slower than the Verilator model (about 3.5 min
per one-second clip; docs/hardware.md).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import NanoMambaError
from .rtl_sim import ClipRunner, cache_base, cached_build, module_ports, tail
from .verilator import SIM_TOP, VerilatorError, sim_wrapper

INSTALL_HINT = "apt-get install iverilog"


class IcarusError(NanoMambaError):
    """Icarus Verilog is missing, or the compile or run of a model failed."""


class IcarusNotInstalled(IcarusError):
    """``iverilog``/``vvp`` are not on PATH."""


TESTBENCH = r"""
// nanomamba_hw Icarus testbench: clips in (binary int16 file), one result line per clip out.
// The Verilator harness (nanomamba_hw/verilator.py) in Verilog, with the same timing.
// vvp sim.vvp +clips=FILE +n=N_CLIPS +len=CLIP_LEN [+max_wait=CYCLES] [+interval=CYCLES]
module nanomamba_tb;
  localparam STDERR = 32'h8000_0002;
  localparam WORDS = (PAYLOAD_WIDTH + 31) / 32;
PORT_DECLARATIONS
  SIM_TOP dut (PORT_CONNECTIONS);

  reg [8*4096-1:0] path;
  reg [63:0] n, len, max_wait, interval, c, i, waited, cycles, start, last, next_at;
  reg [15:0] sample;
  reg [WORDS*32-1:0] payload;
  reg take, got;
  integer fd, lo, hi, w;

  task tick;
    begin
      clk = 0; #1;
      clk = 1; #1;
      cycles = cycles + 1;
    end
  endtask

  task fail(input [8*64-1:0] msg);
    begin
      $fdisplay(STDERR, "%0s", msg);
      $fatal(1);
    end
  endtask

  task read_sample;   // the next int16 of the file, little-endian
    begin
      lo = $fgetc(fd);
      hi = $fgetc(fd);
      if (lo < 0 || hi < 0) fail("short file");
      sample = {hi[7:0], lo[7:0]};
    end
  endtask

  initial begin
    if (!$value$plusargs("clips=%s", path) || !$value$plusargs("n=%d", n)
        || !$value$plusargs("len=%d", len))
      fail("usage: vvp sim.vvp +clips=FILE +n=N_CLIPS +len=CLIP_LEN");
    if (!$value$plusargs("max_wait=%d", max_wait)) max_wait = 200000000;
    if (!$value$plusargs("interval=%d", interval)) interval = 0;  // cycles between samples
    fd = $fopen(path, "rb");
    if (fd == 0) fail("cannot open the clip file");
    cycles = 0;
    rst = 1; pcm__valid = 0; result__ready = 0; clip_start = 0; reg_we = 0;
    repeat (4) tick;
    rst = 0; tick; tick;   // rst is registered in the wrapper
    for (c = 0; c < n; c = c + 1) begin
      start = cycles; last = 0; next_at = cycles;
      i = 0; waited = 0;
      result__ready = 1;
      got = 0;
      if (len > 0) read_sample;
      while (!got) begin
        if (i < len && cycles >= next_at) begin
          pcm__valid = 1; pcm__payload = sample;
        end else pcm__valid = 0;
        clk = 0; #1;
        take = pcm__valid && pcm__ready;
        if (result__valid && result__ready) begin
          $write("%0d %0d %0d", c, cycles - start, cycles - last);
RESULT_PRINT
          $write("\n");
          got = 1;
        end
        clk = 1; #1;
        cycles = cycles + 1;
        if (take) begin
          i = i + 1; last = cycles; next_at = cycles + interval;
          if (i < len) read_sample;
        end
        waited = waited + 1;
        if (waited > max_wait) begin
          $fdisplay(STDERR, "timeout on clip %0d", c);
          $fatal(1);
        end
      end
      pcm__valid = 0;
    end
    $fclose(fd);
    $finish;
  end
endmodule
"""


def _result_print(width: int) -> str:
    """Verilog that writes result__payload as the Verilator harness prints it: one hex number
    up to 64 bits, else 32-bit words of 8 digits, most significant first."""
    if width <= 64:
        return '          $write(" %0h", result__payload);'
    return ("          payload = result__payload;\n"
            "          for (w = WORDS - 1; w >= 0; w = w - 1)\n"
            "            $write(\" %h\", payload[w*32 +: 32]);")


def testbench(design: str, payload_width: int) -> str:
    """The testbench for ``design`` (Verilog containing :data:`SIM_TOP`): a reg for every
    input port, a wire for every output."""
    ports = module_ports(design, SIM_TOP)
    if ports is None:
        raise IcarusError(f"module {SIM_TOP} not found in the Verilog")
    decls = "\n".join(f"  {'reg' if d == 'input' else 'wire'} {w}{n}{' = 0' * (d == 'input')};"
                      for d, w, n in ports)
    conns = ", ".join(f".{n}({n})" for _, _, n in ports)
    return (TESTBENCH.replace("PORT_DECLARATIONS", decls).replace("PORT_CONNECTIONS", conns)
            .replace("SIM_TOP", SIM_TOP).replace("PAYLOAD_WIDTH", str(payload_width))
            .replace("RESULT_PRINT", _result_print(payload_width)))


# Yosys's Verilog starts every combinational ``always @*`` block with a read of one register per
# module, ``reg \$auto$verilog_backend.cc:N:dump_module$K = 0;``, whose initialisation is meant
# to wake them all at time 0. Under Icarus 11 it does not (the variable is initialised before the
# blocks wait for it): a block whose inputs never change keeps X outputs, and the accelerator
# never answers. One more assignment after time 0's processes have started gives them the
# event; nothing else reads that register.
_DUMP_MODULE = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$",
                          re.MULTILINE)


def wake_combinational(design: str) -> str:
    """``design`` with each Yosys ``dump_module`` register set to 1 at time 0 (after #0).

    A design with combinational blocks but no such register (a Yosys that writes Verilog
    differently) would hang in Icarus until the cycle budget: :class:`IcarusError` instead."""
    woken, n = _DUMP_MODULE.subn(lambda m: f"{m[0]}\n{m[1]}initial #0 {m[2]} = 1;", design)
    if n == 0 and "always @*" in design:
        raise IcarusError("the Verilog has combinational blocks but no Yosys dump_module "
                          "register to wake them at time 0 (see icarus.wake_combinational)")
    return woken


def tools() -> tuple[str, str]:
    """Paths of ``iverilog`` and ``vvp``; :class:`IcarusNotInstalled` when either is missing."""
    iverilog, vvp = shutil.which("iverilog"), shutil.which("vvp")
    if iverilog is None or vvp is None:
        raise IcarusNotInstalled(f"Icarus Verilog not installed: {INSTALL_HINT}")
    return iverilog, vvp


@dataclass
class IcarusModel(ClipRunner):
    """A compiled accelerator model (``.vvp``); :meth:`run` classifies clips of int16 PCM."""
    error = IcarusError
    what = "Icarus simulation"

    def command(self, clips: Path, n: int, length: int, max_wait: int,
                interval: int) -> list[str]:
        return [tools()[1], "-n", str(self.exe), f"+clips={clips}", f"+n={n}", f"+len={length}",
                f"+max_wait={max_wait}", f"+interval={interval}"]


def cache_root() -> Path:
    return cache_base() / "icarus"


def build(verilog: str, top: str, payload_width: int, *, progress=print) -> IcarusModel:
    """Compile ``verilog`` (text of a design whose top module is ``top``) with the testbench."""
    try:
        design = wake_combinational(sim_wrapper(verilog, top))
    except VerilatorError as e:
        raise IcarusError(str(e)) from None
    tb = testbench(design, payload_width)
    key = hashlib.sha256((design + tb).encode()).hexdigest()[:20]

    def make(tmp: Path) -> None:
        iverilog = tools()[0]
        (tmp / "design.v").write_text(design)
        (tmp / "testbench.v").write_text(tb)
        if progress:
            progress(f"icarus: compiling {top} (first run of this design; cached afterwards)")
        proc = subprocess.run([iverilog, "-g2012", "-s", "nanomamba_tb", "-o", "sim.vvp",
                               "design.v", "testbench.v"],
                              cwd=tmp, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not (tmp / "sim.vvp").exists():
            raise IcarusError("iverilog compile failed:\n" + tail(proc))

    vvp, seconds, cached = cached_build(cache_root() / key, "sim.vvp", make)
    return IcarusModel(vvp, payload_width, seconds, cached)
