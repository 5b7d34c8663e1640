"""``python -m nanomamba_hw.host``: classify WAV files on the board over its USB-UART.

::

    python -m nanomamba_hw.host --port /dev/ttyUSB1 [--baud 921600] [--timeout 5] [--json]
        [--write-reg ADDR=VALUE ...] [--read-reg ADDR ...] WAV...

Each WAV is loaded like every other engine loads it (:func:`nanomamba_hw.audio.load_clip`: 16 kHz
mono, one second, int16), sent as a CLIP packet (:mod:`nanomamba_hw.protocol`), and the board's
RESULT is printed: one line per file, or with ``--json`` one JSON object per line
``{"file", "index", "label", "logits", "logits_int", "cycles"}``. The logits are the board's
integers (``logits`` equals ``logits_int`` until a float scale is defined).

Register options run before the clips, writes first: ``--write-reg eps_min=0x1234`` or
``--write-reg 3=4660``; ``--read-reg status``. Names: see :data:`REGISTER_NAMES`.

Exit status: 0 on success; 1 if a file could not be read, the board answered ERROR, or it did not
answer at all (then the remaining files are skipped); 2 if the serial port cannot be opened.

The serial object is injectable (:func:`main`'s ``serial_factory``, :class:`Board`), so tests run
the tool against a fake port.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

from . import protocol as P
from .audio import expand_inputs, load_clip
from .config import CLASS_NAMES, CLIP_SAMPLES
from .errors import AudioError, NanoMambaError

DEFAULT_BAUD = 921600
DEFAULT_TIMEOUT = 5.0
# The board ignores input for its idle timeout (0.1 s) after an error that lost the packet
# boundary; wait a little longer before the next request.
ERROR_PAUSE = 0.15
READ_CHUNK = 4096
SERIAL_POLL = 0.02       # pyserial read timeout: how often the deadline is checked

REGISTER_NAMES = {
    "status": 0, "delta_floor_min": 1, "delta_floor_max": 2, "eps_min": 3, "eps_max": 4,
    "bgate_floor": 5,
}


class BoardError(NanoMambaError):
    """The board answered ERROR; ``code`` is the :class:`~nanomamba_hw.protocol.ErrorCode`."""

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"board answered ERROR {code} ({P.ErrorCode.describe(code)})")


class BoardTimeout(NanoMambaError):
    """No (complete) answer within the timeout."""


class SerialPortError(NanoMambaError):
    """The serial port cannot be opened."""


class Board:
    """The board at the end of a serial link.

    ``port`` is any object with ``write(bytes)`` and ``read(n) -> bytes`` (returning fewer bytes,
    possibly none, when nothing arrives within its own short timeout), such as a
    ``serial.Serial``; ``reset_input_buffer()`` is used when present. ``timeout`` (seconds)
    bounds the wait for each answer, counted from the end of the request. ``port_name`` and
    ``baud`` only appear in messages.
    """

    def __init__(self, port, *, timeout: float = DEFAULT_TIMEOUT, clip_len: int = CLIP_SAMPLES,
                 port_name: str = "the serial port", baud: int = DEFAULT_BAUD):
        self.port = port
        self.timeout = timeout
        self.clip_len = clip_len
        self.port_name = port_name
        self.baud = baud

    def _request(self, data: bytes, want: type) -> P.Packet:
        flush = getattr(self.port, "reset_input_buffer", None)
        if flush is not None:
            flush()              # stale answers (e.g. to a request that timed out) go away
        self.port.write(data)
        parser = P.PacketParser(clip_len=self.clip_len, commands=P.BOARD_TO_HOST)
        deadline = time.monotonic() + self.timeout
        garbled = []
        while True:
            for packet in parser.feed(self.port.read(READ_CHUNK)):
                if isinstance(packet, P.BadPacket):
                    # line noise can look like a sync; the real answer may still follow
                    garbled.append(packet.reason)
                elif isinstance(packet, P.Error):
                    raise BoardError(packet.code)
                elif isinstance(packet, want):
                    return packet
                # anything else is a stale answer: keep waiting
            if time.monotonic() > deadline:
                if garbled:
                    raise P.ProtocolError(
                        f"only garbled answers from the board on {self.port_name} within "
                        f"{self.timeout:g} s ({', '.join(sorted(set(garbled)))}) — is it at "
                        f"{self.baud} baud?")
                raise BoardTimeout(f"no answer from the board on {self.port_name} within "
                                   f"{self.timeout:g} s — is it programmed and at "
                                   f"{self.baud} baud?")

    def classify(self, pcm: Sequence[int]) -> P.Result:
        """Send one clip (``clip_len`` int16 samples), return the board's RESULT."""
        if len(pcm) != self.clip_len:
            raise ValueError(f"a clip has {self.clip_len} samples, got {len(pcm)}")
        return self._request(P.encode_clip(pcm), P.Result)

    def read_reg(self, addr: int) -> int:
        """Value of accelerator register ``addr``."""
        while True:
            reply = self._request(P.encode_read_reg(addr), P.Reg)
            if reply.addr == addr:
                return reply.value

    def write_reg(self, addr: int, value: int) -> None:
        """Write accelerator register ``addr`` (waits for the ACK)."""
        self._request(P.encode_write_reg(addr, value), P.Ack)


def open_serial(port: str, baud: int):
    """Open ``port`` with pyserial; :class:`SerialPortError` with a helpful message if not."""
    import serial
    from serial.tools import list_ports

    try:
        return serial.Serial(port, baudrate=baud, timeout=SERIAL_POLL, write_timeout=30)
    except (serial.SerialException, OSError, ValueError) as e:
        reason = str(getattr(e, "strerror", None) or e)
        reason = reason.removeprefix(f"could not open port {port}: ")
        ports = ", ".join(sorted(p.device for p in list_ports.comports())) or "none found"
        raise SerialPortError(f"cannot open serial port {port}: {reason} — is the board "
                              f"connected? (available ports: {ports})") from None


def parse_reg(text: str) -> int:
    """A register given by name (``eps_min``) or number (``3``, ``0x3``)."""
    key = text.strip().lower()
    if key in REGISTER_NAMES:
        return REGISTER_NAMES[key]
    try:
        addr = int(key, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown register {text!r} (a number or one of {', '.join(REGISTER_NAMES)})") from None
    if not 0 <= addr <= 255:
        raise argparse.ArgumentTypeError(f"register address {addr} out of range 0..255")
    return addr


def parse_write(text: str) -> tuple[int, int]:
    """``ADDR=VALUE`` for --write-reg."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected ADDR=VALUE, got {text!r}")
    addr, value = text.split("=", 1)
    try:
        v = int(value.strip(), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"register value {value!r} is not an integer") from None
    if not -(1 << 31) <= v < (1 << 32):
        raise argparse.ArgumentTypeError(f"register value {v} does not fit in 32 bits")
    return parse_reg(addr), v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m nanomamba_hw.host",
                                 description="Classify one-second keyword clips on the FPGA board "
                                             "over its USB-UART.")
    ap.add_argument("wavs", nargs="*", metavar="WAV",
                    help="WAV files, or directories (every *.wav)")
    ap.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB1 "
                                                  "or COM4")
    ap.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                    help=f"UART rate the bitstream was built for (default {DEFAULT_BAUD})")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT:g})")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--write-reg", type=parse_write, action="append", default=[],
                    metavar="ADDR=VALUE", help="write an accelerator register first (repeatable)")
    ap.add_argument("--read-reg", type=parse_reg, action="append", default=[], metavar="ADDR",
                    help="read an accelerator register (repeatable)")
    ap.add_argument("--clip-len", type=int, default=CLIP_SAMPLES, help=argparse.SUPPRESS)
    return ap


def _label(index: int) -> str:
    return CLASS_NAMES[index] if 0 <= index < len(CLASS_NAMES) else f"class{index}"


def main(argv: list[str] | None = None, *,
         serial_factory: Callable[[str, int], object] | None = None) -> int:
    """Run the CLI. ``serial_factory(port, baud)`` returns the serial object (tests pass a fake);
    it may raise :class:`SerialPortError` or ``OSError`` for a port that cannot be opened."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if not args.wavs and not args.read_reg and not args.write_reg:
        ap.error("give WAV files, or --read-reg/--write-reg")

    paths = expand_inputs(args.wavs)
    if args.wavs and not paths:
        print("error: no WAV files found in the arguments", file=sys.stderr)
        return 1

    factory = serial_factory or open_serial
    try:
        port = factory(args.port, args.baud)
    except SerialPortError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot open serial port {args.port}: {e}", file=sys.stderr)
        return 2
    board = Board(port, timeout=args.timeout, clip_len=args.clip_len, port_name=args.port,
                  baud=args.baud)
    try:
        return _run(board, args, paths)
    finally:
        close = getattr(port, "close", None)
        if close is not None:
            close()


def _run(board: Board, args, paths) -> int:
    status = 0

    def emit(obj: dict, text: str) -> None:
        print(json.dumps(obj) if args.json else text, flush=True)

    try:
        for addr, value in args.write_reg:
            board.write_reg(addr, value)
            emit({"write_reg": addr, "value": value & 0xFFFFFFFF},
                 f"reg {addr} <- {value & 0xFFFFFFFF} (0x{value & 0xFFFFFFFF:08x})")
        for addr in args.read_reg:
            value = board.read_reg(addr)
            emit({"reg": addr, "value": value}, f"reg {addr} = {value} (0x{value:08x})")
    except BoardTimeout as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (BoardError, P.ProtocolError) as e:
        print(f"error: register access: {e}", file=sys.stderr)
        return 1

    for path in paths:
        try:
            clip = load_clip(path, length=args.clip_len)
        except AudioError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        for note in clip.notes:
            print(f"note: {path}: {note}", file=sys.stderr)
        try:
            res = board.classify(clip.pcm)
        except BoardTimeout as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 1
        except (BoardError, P.ProtocolError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            status = 1
            time.sleep(ERROR_PAUSE)
            continue
        logits = list(res.logits)
        label = _label(res.index)
        top = logits[res.index] if res.index < len(logits) else "?"
        emit({"file": str(path), "index": res.index, "label": label, "logits": logits,
              "logits_int": logits, "cycles": res.cycles},
             f"{path}\t{label}\t(class {res.index}, logit {top}, {res.cycles} cycles)")
    return status


if __name__ == "__main__":
    sys.exit(main())
