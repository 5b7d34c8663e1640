"""Binary protocol between the host and the board (USB-UART), shared by every side of the link.

Every packet is little-endian and framed as::

    b"NM"  cmd:u8  payload...  checksum:u16

where ``checksum`` is the sum of all preceding bytes of the packet (sync and command included)
modulo 65536. Packets carry no length field: the command fixes the payload length (``RESULT``
announces its class count in its second payload byte, ``CLIP`` has exactly ``clip_len`` samples,
16,000 for the real model).

========================  =====  ==========================================  =====================
packet                    cmd    payload                                     answer
========================  =====  ==========================================  =====================
host→board ``CLIP``       0x01   ``clip_len`` × int16 samples                RESULT or ERROR
host→board ``WRITE_REG``  0x02   addr u8, value u32                          ACK
host→board ``READ_REG``   0x03   addr u8                                     REG
board→host ``RESULT``     0x81   index u8, n u8, n × logit int32, cycles u32
board→host ``ACK``        0x82   addr u8
board→host ``REG``        0x83   addr u8, value u32
board→host ``ERROR``      0xEE   code u8 (see :class:`ErrorCode`)
========================  =====  ==========================================  =====================

The board streams a CLIP's samples into the accelerator as they arrive, so it only learns that the
checksum was wrong at the end; it then answers ERROR (code 1) and discards the result. After an
error that leaves the packet boundary unknown (codes 2, 3, 4) the board ignores input until the
line has been idle for its idle timeout (100 ms by default), so a host should pause that long
before its next request.

:class:`PacketParser` turns any byte stream into packets, resynchronising on ``b"NM"`` after
garbage; it is used by the host tool, by the board-top tests, and by the accelerator tests.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from .config import CLIP_SAMPLES
from .errors import NanoMambaError

SYNC = b"NM"
HEADER_LEN = 3          # sync + command
CHECKSUM_LEN = 2


class Cmd(enum.IntEnum):
    """Command byte of each packet type."""

    CLIP = 0x01
    WRITE_REG = 0x02
    READ_REG = 0x03
    RESULT = 0x81
    ACK = 0x82
    REG = 0x83
    ERROR = 0xEE


class ErrorCode(enum.IntEnum):
    """Payload of an ERROR packet."""

    CHECKSUM = 1          # the packet's checksum did not match; its effect was discarded
    UNKNOWN_COMMAND = 2   # the command byte is not one the board knows
    FRAMING = 3           # a UART byte inside a packet had a low stop bit
    OVERRUN = 4           # samples or bytes were lost (accelerator or audio capture busy)

    @classmethod
    def describe(cls, code: int) -> str:
        """Human-readable name of ``code`` (also for codes this version does not know)."""
        try:
            return {1: "checksum mismatch", 2: "unknown command", 3: "UART framing error",
                    4: "samples lost (board busy or overrun)"}[cls(code)]
        except ValueError:
            return f"unknown error code {code}"


class ProtocolError(NanoMambaError):
    """Bytes that do not form a valid packet, or a value that cannot be encoded."""


# --- packet types -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clip:
    """host→board: one clip of int16 PCM samples (``clip_len`` of them)."""

    pcm: tuple[int, ...]


@dataclass(frozen=True)
class WriteReg:
    """host→board: write ``value`` to accelerator register ``addr``."""

    addr: int
    value: int


@dataclass(frozen=True)
class ReadReg:
    """host→board: read accelerator register ``addr``."""

    addr: int


@dataclass(frozen=True)
class Result:
    """board→host: the decision for one clip: class ``index``, integer ``logits``, ``cycles``."""

    index: int
    logits: tuple[int, ...]
    cycles: int


@dataclass(frozen=True)
class Ack:
    """board→host: a WRITE_REG to ``addr`` was done."""

    addr: int


@dataclass(frozen=True)
class Reg:
    """board→host: register ``addr`` holds ``value``."""

    addr: int
    value: int


@dataclass(frozen=True)
class Error:
    """board→host: a request failed; ``code`` is an :class:`ErrorCode` value."""

    code: int

    @property
    def description(self) -> str:
        return ErrorCode.describe(self.code)


Packet = Clip | WriteReg | ReadReg | Result | Ack | Reg | Error

HOST_TO_BOARD = frozenset({Cmd.CLIP, Cmd.WRITE_REG, Cmd.READ_REG})
BOARD_TO_HOST = frozenset({Cmd.RESULT, Cmd.ACK, Cmd.REG, Cmd.ERROR})


@dataclass(frozen=True)
class BadPacket:
    """What :class:`PacketParser` yields for framed bytes that are not a valid packet.

    ``reason`` is ``"checksum"`` or ``"unknown command"``; ``raw`` holds the bytes examined.
    The parser resumes scanning right after the bad packet's first sync byte.
    """

    reason: str
    raw: bytes = field(repr=False)


# --- encoding ----------------------------------------------------------------------------------

def checksum(data: bytes) -> int:
    """The packet checksum: sum of ``data``'s bytes modulo 65536."""
    return sum(data) & 0xFFFF


def _frame(cmd: int, payload: bytes) -> bytes:
    body = SYNC + bytes([cmd]) + payload
    return body + struct.pack("<H", checksum(body))


def _check_range(name: str, value: int, lo: int, hi: int) -> int:
    value = int(value)
    if not lo <= value <= hi:
        raise ProtocolError(f"{name} {value} out of range [{lo}, {hi}]")
    return value


def encode_clip(pcm: Iterable[int]) -> bytes:
    """A CLIP packet for int16 samples (a list, tuple or int16 numpy array)."""
    samples = [int(s) for s in pcm]
    for s in samples:
        if not -32768 <= s <= 32767:
            raise ProtocolError(f"sample {s} does not fit in int16")
    return _frame(Cmd.CLIP, struct.pack(f"<{len(samples)}h", *samples))


def encode_write_reg(addr: int, value: int) -> bytes:
    """A WRITE_REG packet; ``value`` may be given signed (-2**31..) or unsigned (..2**32-1)."""
    addr = _check_range("register address", addr, 0, 255)
    value = _check_range("register value", value, -(1 << 31), (1 << 32) - 1) & 0xFFFFFFFF
    return _frame(Cmd.WRITE_REG, struct.pack("<BI", addr, value))


def encode_read_reg(addr: int) -> bytes:
    """A READ_REG packet."""
    return _frame(Cmd.READ_REG, bytes([_check_range("register address", addr, 0, 255)]))


def encode_result(index: int, logits: Sequence[int], cycles: int) -> bytes:
    """A RESULT packet (what the board sends; used by tests and fake boards)."""
    n = _check_range("class count", len(logits), 0, 255)
    index = _check_range("class index", index, 0, 255)
    cycles = _check_range("cycle count", cycles, 0, (1 << 32) - 1)
    logits = [_check_range("logit", v, -(1 << 31), (1 << 31) - 1) for v in logits]
    return _frame(Cmd.RESULT, struct.pack(f"<BB{n}iI", index, n, *logits, cycles))


def encode_ack(addr: int) -> bytes:
    """An ACK packet."""
    return _frame(Cmd.ACK, bytes([_check_range("register address", addr, 0, 255)]))


def encode_reg(addr: int, value: int) -> bytes:
    """A REG packet."""
    addr = _check_range("register address", addr, 0, 255)
    value = _check_range("register value", value, 0, (1 << 32) - 1)
    return _frame(Cmd.REG, struct.pack("<BI", addr, value))


def encode_error(code: int) -> bytes:
    """An ERROR packet."""
    return _frame(Cmd.ERROR, bytes([_check_range("error code", code, 0, 255)]))


def encode(packet: Packet) -> bytes:
    """Encode any packet object."""
    match packet:
        case Clip(pcm):
            return encode_clip(pcm)
        case WriteReg(addr, value):
            return encode_write_reg(addr, value)
        case ReadReg(addr):
            return encode_read_reg(addr)
        case Result(index, logits, cycles):
            return encode_result(index, logits, cycles)
        case Ack(addr):
            return encode_ack(addr)
        case Reg(addr, value):
            return encode_reg(addr, value)
        case Error(code):
            return encode_error(code)
    raise TypeError(f"not a packet: {packet!r}")


# --- decoding ----------------------------------------------------------------------------------

def payload_length(cmd: int, head: bytes, *, clip_len: int = CLIP_SAMPLES) -> int | None:
    """Payload length of a packet with command ``cmd``, given the payload bytes seen so far.

    Returns ``None`` while more payload bytes are needed to know it (RESULT before its class
    count), and raises :class:`KeyError` for an unknown command.
    """
    match cmd:
        case Cmd.CLIP:
            return 2 * clip_len
        case Cmd.WRITE_REG | Cmd.REG:
            return 5
        case Cmd.READ_REG | Cmd.ACK | Cmd.ERROR:
            return 1
        case Cmd.RESULT:
            return None if len(head) < 2 else 2 + 4 * head[1] + 4
    raise KeyError(cmd)


def _decode_payload(cmd: int, payload: bytes) -> Packet:
    match cmd:
        case Cmd.CLIP:
            return Clip(struct.unpack(f"<{len(payload) // 2}h", payload))
        case Cmd.WRITE_REG:
            addr, value = struct.unpack("<BI", payload)
            return WriteReg(addr, value)
        case Cmd.READ_REG:
            return ReadReg(payload[0])
        case Cmd.RESULT:
            index, n = payload[0], payload[1]
            *logits, cycles = struct.unpack(f"<{n}iI", payload[2:])
            return Result(index, tuple(logits), cycles)
        case Cmd.ACK:
            return Ack(payload[0])
        case Cmd.REG:
            addr, value = struct.unpack("<BI", payload)
            return Reg(addr, value)
        case Cmd.ERROR:
            return Error(payload[0])
    raise KeyError(cmd)


def decode(data: bytes, *, clip_len: int | None = None) -> Packet:
    """Decode exactly one packet; raises :class:`ProtocolError` naming what is wrong.

    ``clip_len`` defaults to whatever length a CLIP packet in ``data`` has.
    """
    data = bytes(data)
    if len(data) < HEADER_LEN + CHECKSUM_LEN or data[:2] != SYNC:
        raise ProtocolError(f"not a packet: {data[:8]!r}...")
    cmd, payload = data[2], data[HEADER_LEN:-CHECKSUM_LEN]
    if clip_len is None:
        clip_len = len(payload) // 2
    try:
        want = payload_length(cmd, payload, clip_len=clip_len)
    except KeyError:
        raise ProtocolError(f"unknown command 0x{cmd:02x}") from None
    if want is None or want != len(payload):
        raise ProtocolError(f"command 0x{cmd:02x}: payload of {len(payload)} bytes, "
                            f"expected {want}")
    got, = struct.unpack("<H", data[-CHECKSUM_LEN:])
    if got != checksum(data[:-CHECKSUM_LEN]):
        raise ProtocolError(f"checksum 0x{got:04x} does not match 0x"
                            f"{checksum(data[:-CHECKSUM_LEN]):04x}")
    return _decode_payload(cmd, payload)


class PacketParser:
    """Incremental parser: feed it bytes in any pieces, get whole packets back.

    Bytes before a sync pattern are skipped (counted in :attr:`skipped`). A framed packet with a
    wrong checksum or an unknown command (one outside ``commands``, if given) is reported as a
    :class:`BadPacket` and scanning resumes one byte after its ``N``, so a stray ``b"NM"`` inside
    garbage cannot hide a real packet.

    >>> p = PacketParser()
    >>> p.feed(b"junk" + encode_ack(3)[:4])
    []
    >>> p.feed(encode_ack(3)[4:])
    [Ack(addr=3)]
    """

    def __init__(self, *, clip_len: int = CLIP_SAMPLES, commands: Iterable[int] | None = None):
        self.clip_len = clip_len
        # Restricting the commands (e.g. to BOARD_TO_HOST on the host) keeps a stray "NM\x01"
        # in line noise from holding everything back until 32 kB of "clip" have arrived.
        self.commands = None if commands is None else frozenset(int(c) for c in commands)
        self.skipped = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet | BadPacket]:
        """Consume ``data``; return the packets (and bad packets) it completed, in order."""
        self._buf += data
        return list(self._drain())

    def __call__(self, data: bytes) -> list[Packet | BadPacket]:
        return self.feed(data)

    @property
    def pending(self) -> int:
        """Bytes held back because they may start a packet."""
        return len(self._buf)

    def _drain(self) -> Iterator[Packet | BadPacket]:
        buf = self._buf
        while True:
            start = buf.find(SYNC)
            if start < 0:
                # keep a trailing "N": it may be the first half of the next sync
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self.skipped += len(buf) - keep
                del buf[:len(buf) - keep]
                return
            if start:
                self.skipped += start
                del buf[:start]
            if len(buf) < HEADER_LEN:
                return
            cmd = buf[2]
            try:
                if self.commands is not None and cmd not in self.commands:
                    raise KeyError(cmd)
                want = payload_length(cmd, buf[HEADER_LEN:], clip_len=self.clip_len)
            except KeyError:
                yield BadPacket("unknown command", bytes(buf[:HEADER_LEN]))
                self.skipped += 1
                del buf[:1]
                continue
            if want is None:
                return
            total = HEADER_LEN + want + CHECKSUM_LEN
            if len(buf) < total:
                return
            frame = bytes(buf[:total])
            got, = struct.unpack("<H", frame[-CHECKSUM_LEN:])
            if got != checksum(frame[:-CHECKSUM_LEN]):
                yield BadPacket("checksum", frame)
                self.skipped += 1
                del buf[:1]
                continue
            del buf[:total]
            yield _decode_payload(cmd, frame[HEADER_LEN:-CHECKSUM_LEN])
