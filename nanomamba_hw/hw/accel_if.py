"""The interface every NanoMamba accelerator presents to a board top, and a dummy that honours it.

:class:`AcceleratorSignature` (members seen from the accelerator):

``pcm: In(stream.Signature(signed(16)))``
    int16 PCM samples at 16 kHz. Exactly ``clip_len`` accepted samples (16,000 for the real
    model) make one clip. The accelerator may hold ``ready`` low at any time (backpressure);
    the producer must not assert ``valid`` in a cycle where it pulses ``clip_start``.
``result: Out(stream.Signature(result_layout(n_classes, logit_bits)))``
    One result per completed clip, in clip order; held (``valid`` high, payload stable) until
    accepted. Fields: ``index`` (argmax class, ``unsigned(4)``), ``logits``
    (``ArrayLayout(signed(logit_bits), n_classes)``, the integer logits whose scale the
    accelerator defines) and ``cycles`` (``unsigned(32)``, clock cycles from the acceptance of
    the clip's first sample to the result becoming valid).
``clip_start: In(1)``
    One-cycle strobe: abandon any partial clip (fewer than ``clip_len`` samples accepted) and
    count the next sample as the first of a new clip. It does not cancel a clip that is already
    complete: that clip's result is still delivered.
``busy: Out(1)``
    A clip is in progress (at least one sample accepted) or its result is being computed or
    waiting to be accepted.
Register port ``reg_addr: In(4)``, ``reg_wdata: In(32)``, ``reg_we: In(1)``, ``reg_rdata: Out(32)``
    ``reg_rdata`` is a combinational read of register ``reg_addr``; a write happens on the
    clock edge where ``reg_we`` is high. Registers:

    ====  ==================  ===================================================================
    addr  name                meaning
    ====  ==================  ===================================================================
    0     STATUS (read-only)  bit 0 busy, bit 1 result valid (waiting on ``result``); writes
                              are ignored
    1     DELTA_FLOOR_MIN     SSM calibration: Δ floor at SNR 0
    2     DELTA_FLOOR_MAX     SSM calibration: Δ floor at SNR 1
    3     EPS_MIN             SSM calibration: ε at SNR 1
    4     EPS_MAX             SSM calibration: ε at SNR 0
    5     BGATE_FLOOR         SSM calibration: B-gate floor
    6–15  reserved            read 0, writes ignored (an accelerator may define them later)
    ====  ==================  ===================================================================

    Registers 1–5 hold the five :class:`~nanomamba_hw.config.SSMConstants` as raw 32-bit
    integers; their fixed-point format is defined by the accelerator (its fixed model), not here.
    A write takes effect for the next clip at the latest.

:class:`DummyAccelerator` implements the signature with an easily predicted computation
(:func:`dummy_result`), so board tops, the host link and their tests work before the real
accelerator exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import CLIP_SAMPLES

__all__ = ["REG_STATUS", "REG_DELTA_FLOOR_MIN", "REG_DELTA_FLOOR_MAX", "REG_EPS_MIN",
           "REG_EPS_MAX", "REG_BGATE_FLOOR", "N_REGS", "result_layout", "AcceleratorSignature",
           "DummyAccelerator", "DummyResult", "dummy_result"]

REG_STATUS = 0
REG_DELTA_FLOOR_MIN = 1
REG_DELTA_FLOOR_MAX = 2
REG_EPS_MIN = 3
REG_EPS_MAX = 4
REG_BGATE_FLOOR = 5
N_REGS = 16          # reg_addr is 4 bits wide
STATUS_BUSY = 1 << 0
STATUS_RESULT_VALID = 1 << 1


def result_layout(n_classes: int = 12, logit_bits: int = 32) -> data.StructLayout:
    """Payload layout of the ``result`` stream: ``index``, ``logits[n_classes]``, ``cycles``."""
    if not 2 <= n_classes <= 16:
        raise ValueError(f"n_classes must be in 2..16 (index is 4 bits), got {n_classes}")
    if not 2 <= logit_bits <= 32:
        raise ValueError(f"logit_bits must be in 2..32 (logits travel as int32), got {logit_bits}")
    return data.StructLayout({
        "index": unsigned(4),
        "logits": data.ArrayLayout(signed(logit_bits), n_classes),
        "cycles": unsigned(32),
    })


class AcceleratorSignature(wiring.Signature):
    """Signature of a NanoMamba accelerator (see the module docstring for the contract).

    Two signatures are equal when their ``n_classes`` and ``logit_bits`` are.
    """

    def __init__(self, n_classes: int = 12, logit_bits: int = 32):
        self.n_classes = n_classes
        self.logit_bits = logit_bits
        self.result_layout = result_layout(n_classes, logit_bits)
        super().__init__({
            "pcm": In(stream.Signature(signed(16))),
            "result": Out(stream.Signature(self.result_layout)),
            "clip_start": In(1),
            "reg_addr": In(4),
            "reg_wdata": In(32),
            "reg_we": In(1),
            "reg_rdata": Out(32),
            "busy": Out(1),
        })

    def __eq__(self, other):
        return (type(other) is type(self) and other.n_classes == self.n_classes and
                other.logit_bits == self.logit_bits)

    def __hash__(self):
        return hash((type(self), self.n_classes, self.logit_bits))

    def __repr__(self):
        return f"AcceleratorSignature(n_classes={self.n_classes}, logit_bits={self.logit_bits})"


# --- the dummy ---------------------------------------------------------------------------------

class DummyResult(NamedTuple):
    """What :class:`DummyAccelerator` answers for a clip (``cycles`` depends on stalls)."""

    index: int
    logits: list[int]


def _wrap(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def dummy_result(pcm: Iterable[int], *, n_classes: int = 12, logit_bits: int = 32) -> DummyResult:
    """The dummy's computation in Python.

    ``logits[i]`` = sum of the samples whose position in the clip is ≡ i (mod ``n_classes``),
    wrapped to ``logit_bits`` two's complement; ``index`` = (sum of all samples) mod
    ``n_classes`` (Python's non-negative modulo, on the exact sum).
    """
    samples = [int(s) for s in pcm]
    logits = [_wrap(sum(samples[i::n_classes]), logit_bits) for i in range(n_classes)]
    return DummyResult(sum(samples) % n_classes, logits)


class DummyAccelerator(wiring.Component):
    """Stand-in accelerator computing :func:`dummy_result`, cycle-honest and backpressure-aware.

    Parameters (keyword-only): ``clip_len`` (samples per clip, 16,000 for the real model; tests
    use fewer), ``n_classes``, ``logit_bits``, ``pcm_stall`` (if > 0, ``pcm.ready`` is low for
    ``pcm_stall`` cycles after each accepted sample, to imitate a slower consumer).

    After the last sample it computes the index by restoring division (a few dozen cycles), then
    presents the result until it is accepted; ``pcm.ready`` is low meanwhile. Registers 1–5 are
    plain read/write storage (reset to 0).
    """

    def __init__(self, *, clip_len: int = CLIP_SAMPLES, n_classes: int = 12,
                 logit_bits: int = 32, pcm_stall: int = 0):
        try:
            if clip_len < 1:
                raise ValueError(f"clip_len must be positive, got {clip_len}")
            signature = AcceleratorSignature(n_classes, logit_bits)
        except ValueError:
            self._MustUse__silence = True      # no "never elaborated" warning for a refused one
            raise
        self.clip_len = clip_len
        self.n_classes = n_classes
        self.logit_bits = logit_bits
        self.pcm_stall = pcm_stall
        super().__init__(signature)

    def elaborate(self, platform):
        m = Module()
        n = self.n_classes
        max_abs = self.clip_len * 32768
        total_bits = max_abs.bit_length() + 2
        # index = total mod n by restoring division: add n·2^k to make it non-negative
        # (that does not change the residue), then subtract n·2^j for j = k..0.
        k = max(0, max_abs.bit_length() - (n - 1).bit_length() + 1)
        bias = n << k
        assert bias > max_abs

        sums = [Signal(signed(self.logit_bits), name=f"sum{i}") for i in range(n)]
        total = Signal(signed(total_bits))
        count = Signal(range(self.clip_len + 1))
        phase = Signal(range(n))
        cycles = Signal(32)
        counting = Signal()
        rem = Signal(bias.bit_length() + 1)
        div = Signal(bias.bit_length() + 1)
        index = Signal(4)
        stall = Signal(range(self.pcm_stall + 1))

        regs = [Signal(32, name=f"reg{i}") for i in range(1, 6)]
        with m.If(self.reg_we):
            with m.Switch(self.reg_addr):
                for i, r in enumerate(regs, start=1):
                    with m.Case(i):
                        m.d.sync += r.eq(self.reg_wdata)
        with m.Switch(self.reg_addr):
            with m.Case(REG_STATUS):
                m.d.comb += self.reg_rdata.eq(Cat(self.busy, self.result.valid))
            for i, r in enumerate(regs, start=1):
                with m.Case(i):
                    m.d.comb += self.reg_rdata.eq(r)

        with m.If(counting & (cycles != 0xFFFF_FFFF)):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(stall != 0):
            m.d.sync += stall.eq(stall - 1)

        def clear():
            return [*(s.eq(0) for s in sums), total.eq(0), count.eq(0), phase.eq(0),
                    counting.eq(0), cycles.eq(0)]

        with m.FSM():
            with m.State("COLLECT"):
                m.d.comb += [self.pcm.ready.eq((stall == 0) & ~self.clip_start),
                             self.busy.eq(count != 0)]
                with m.If(self.clip_start):
                    m.d.sync += clear()
                with m.Elif(self.pcm.valid & self.pcm.ready):
                    sample = self.pcm.payload
                    with m.Switch(phase):
                        for i, s in enumerate(sums):
                            with m.Case(i):
                                m.d.sync += s.eq(s + sample)
                    m.d.sync += [total.eq(total + sample), count.eq(count + 1),
                                 phase.eq(Mux(phase == n - 1, 0, phase + 1)),
                                 stall.eq(self.pcm_stall)]
                    with m.If(count == 0):
                        m.d.sync += [counting.eq(1), cycles.eq(1)]
                    with m.If(count == self.clip_len - 1):
                        m.next = "MOD_INIT"
            with m.State("MOD_INIT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [rem.eq(total + bias * (total < 0)), div.eq(bias)]
                m.next = "MOD"
            with m.State("MOD"):
                m.d.comb += self.busy.eq(1)
                with m.If(rem >= div):
                    m.d.sync += rem.eq(rem - div)
                m.d.sync += div.eq(div >> 1)
                with m.If(div == n):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [index.eq(rem), counting.eq(0)]
                m.next = "RESULT"
            with m.State("RESULT"):
                m.d.comb += [self.busy.eq(1), self.result.valid.eq(1)]
                with m.If(self.result.ready):
                    m.d.sync += clear()
                    m.next = "COLLECT"

        m.d.comb += [self.result.payload.index.eq(index),
                     self.result.payload.cycles.eq(cycles)]
        for i, s in enumerate(sums):
            m.d.comb += self.result.payload.logits[i].eq(s)
        return m
