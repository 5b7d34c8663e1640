"""What the two simulators of the emitted Verilog share (:mod:`~nanomamba_hw.verilator`,
:mod:`~nanomamba_hw.icarus`): the port list of a module, the cached build directory, and
running a compiled model on clips.

Both harnesses read the clips from one binary file (int16, little-endian, clip after clip) and
print one line per clip::

    CLIP_INDEX CYCLES_FROM_FIRST_SAMPLE CYCLES_AFTER_LAST_SAMPLE HEXWORDS...

where the hexadecimal words are the result payload, most significant first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from .errors import NanoMambaError

# Cycle budget per clip before a harness gives up (about 1,700 times a full clip's cycles).
MAX_WAIT = 2_000_000_000


def cache_base() -> Path:
    """Root of the compiled-model caches: ``$NANOMAMBA_CACHE`` or ``~/.cache/nanomamba_hw``;
    each simulator has its own directory under it."""
    return Path(os.environ.get("NANOMAMBA_CACHE") or Path.home() / ".cache" / "nanomamba_hw")


def module_ports(verilog: str, module: str) -> list[tuple[str, str, str]] | None:
    """(direction, width such as ``"[15:0] "`` or ``""``, name) of each port of ``module`` in
    Yosys-written Verilog, in declaration order; None when the module is not there."""
    body = re.search(rf"^module {re.escape(module)}\(.*?\);\n(.*?)^endmodule",
                     verilog, re.DOTALL | re.MULTILINE)
    if body is None:
        return None
    return re.findall(r"^  (input|output) (\[\d+:\d+\] )?(\S+);$", body.group(1),
                      re.MULTILINE)


def tail(proc: subprocess.CompletedProcess, lines: int = 15) -> str:
    """The last lines of what a failed tool said (stderr, or stdout when stderr is empty)."""
    msg = (proc.stderr or proc.stdout or "").strip().splitlines()
    return "\n".join(msg[-lines:])


def cached_build(wd: Path, product: str, make: Callable[[Path], None]) -> tuple[Path, float, bool]:
    """``wd/product``, made by ``make(directory)`` unless it already exists.

    ``make`` works in a private temporary directory that is renamed to ``wd`` when it returns
    (atomic: when a concurrent build of the same design renamed its own first, that one is
    used). Returns (path of the product, build seconds, whether it was cached)."""
    if (wd / product).exists():
        return wd / product, 0.0, True
    tmp = wd.with_name(wd.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.time()
    try:
        make(tmp)
        tmp.rename(wd)
    except OSError:
        if not (wd / product).exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return wd / product, time.time() - t0, False


def parse_results(stdout: str, n: int, error: type[NanoMambaError]) -> list[tuple[int, int, int]]:
    """(payload, cycles from the first sample, cycles after the last sample) per result line."""
    out = []
    for line in stdout.splitlines():
        parts = line.split()
        try:
            out.append((int("".join(parts[3:]), 16), int(parts[1]), int(parts[2])))
        except (ValueError, IndexError):
            raise error(f"unexpected line from the simulation: {line[:200]!r}") from None
    if len(out) != n:
        raise error(f"expected {n} results, got {len(out)}")
    return out


@dataclass
class ClipRunner:
    """A compiled model and its :meth:`run`: ``exe`` is the compiled model (its directory takes
    the temporary clip file); subclasses give ``error``, ``what`` and :meth:`command`."""

    exe: Path
    payload_width: int
    build_seconds: float
    cached: bool
    error: ClassVar[type[NanoMambaError]] = NanoMambaError
    what: ClassVar[str] = "simulation"

    def command(self, clips: Path, n: int, length: int, max_wait: int,
                interval: int) -> list[str]:
        raise NotImplementedError

    def run(self, pcm: np.ndarray, *, interval: int = 0,
            timeout: float = 3600) -> list[tuple[int, int, int]]:
        """(result payload as an int, cycles from the first sample, cycles after the last
        sample) for each clip of ``pcm`` (N, L) int16; ``interval`` idle cycles between
        samples model a real-time source (6,250 at 100 MHz for 16 kHz)."""
        pcm = np.ascontiguousarray(np.asarray(pcm, dtype="<i2"))
        if pcm.ndim == 1:
            pcm = pcm[None]
        fd, name = tempfile.mkstemp(suffix=".bin", prefix="clips-", dir=self.exe.parent)
        clips = Path(name)
        with os.fdopen(fd, "wb") as f:
            f.write(pcm.tobytes())
        try:
            proc = subprocess.run(self.command(clips, len(pcm), pcm.shape[1], MAX_WAIT, interval),
                                  capture_output=True, text=True, timeout=timeout,
                                  check=False)
        finally:
            clips.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise self.error(f"{self.what} failed (exit {proc.returncode}): "
                             f"{tail(proc, 8)[-500:]}")
        return parse_results(proc.stdout, len(pcm), self.error)
