"""Transcendental units of the accelerator, defined bit for bit.

Two shared units carry every wide-range function:

- :class:`Log2Unit` — log2 of an unsigned integer: leading-one detector, normalising shift that
  keeps ``MANT_BITS`` bits below the leading one (truncating), and a table of
  ``log2(1 + i/2**SEG_BITS)`` with linear interpolation;
- :class:`Exp2Unit` — 2**y of a fixed-point ``y``: integer part → shift, fraction → table of
  ``2**(i/2**SEG_BITS)`` with linear interpolation.

PCEN's powers, the spectral-flatness geometric mean, the SNR ratio, rsqrt in the norms and
exp(A·Δ) in the scan are compositions of these two (:func:`rsqrt`, :func:`divide`).

Bounded smooth functions (sigmoid, tanh, SiLU, softplus) are :class:`PWLTable` objects: a
uniform table over a clamped input range with linear interpolation and a stated rule outside
the range ("clamp" to the end value, or "identity" y = x).

Tables are built from numpy float at construction (design time); evaluation is integer only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ops import I64, Fmt, SatCounter, leading_one, rshift_round, saturate, shift_round

LOG_FRAC = 16      # fractional bits of every log2-domain value
MANT_BITS = 16     # mantissa bits kept below the leading one
SEG_BITS = 6       # 64 table segments per octave for log2 and exp2
EXP_MANT = 16      # fractional bits of the exp2 table entries (value in [1, 2))


def _interp(table: np.ndarray, idx: np.ndarray, rem: np.ndarray, rem_bits: int) -> np.ndarray:
    """Linear interpolation table[idx] + (table[idx+1]-table[idx])·rem / 2**rem_bits (rounded)."""
    a = table[idx]
    b = table[idx + 1]
    return a + rshift_round((b - a) * rem, rem_bits)


def _round_table(values: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5).astype(I64)


@dataclass(frozen=True)
class Log2Unit:
    """log2 of unsigned integers, in fixed point with ``LOG_FRAC`` fractional bits.

    ``log2(x, in_frac)`` returns round(log2(x / 2**in_frac) · 2**LOG_FRAC) up to the table error
    (< 2**-14 absolute; see tests). ``x == 0`` gives ``zero_value`` (a large negative number,
    callers avoid or clamp it).
    """

    table: np.ndarray = field(default_factory=lambda: _round_table(
        np.log2(1 + np.arange(2 ** SEG_BITS + 1) / 2 ** SEG_BITS) * 2 ** LOG_FRAC))
    zero_value: int = -(1 << 30)

    def __call__(self, x: np.ndarray, in_frac: int = 0) -> np.ndarray:
        x = np.asarray(x, dtype=I64)
        e = leading_one(x)
        sh = e - MANT_BITS
        # Bits below the leading one, MANT_BITS of them (truncate when shifting right).
        mant = np.where(sh >= 0, x >> np.maximum(sh, 0), x << np.maximum(-sh, 0))
        mant = mant & ((I64(1) << MANT_BITS) - 1)
        rem_bits = MANT_BITS - SEG_BITS
        frac = _interp(self.table, mant >> I64(rem_bits), mant & ((I64(1) << rem_bits) - 1),
                       rem_bits)
        out = ((e - in_frac) << I64(LOG_FRAC)) + frac
        return np.where(x > 0, out, I64(self.zero_value))


@dataclass(frozen=True)
class Exp2Unit:
    """2**y for ``y`` with ``LOG_FRAC`` fractional bits, returned in ``out_fmt``.

    Result = round(2**frac(y) table value · 2**(floor(y) + out_fmt.frac − EXP_MANT)), saturated
    to ``out_fmt`` (counted), and 0 when the shift drops every bit. Every use names its output
    format, so the hardware knows the width of each instance.
    """

    table: np.ndarray = field(default_factory=lambda: _round_table(
        2.0 ** (np.arange(2 ** SEG_BITS + 1) / 2 ** SEG_BITS) * 2 ** EXP_MANT))

    def __call__(self, y: np.ndarray, out_fmt: Fmt, counter: SatCounter | None = None,
                 stage: str = "") -> np.ndarray:
        y = np.asarray(y, dtype=I64)
        ipart = y >> I64(LOG_FRAC)
        f = y & ((I64(1) << LOG_FRAC) - 1)
        rem_bits = LOG_FRAC - SEG_BITS
        mant = _interp(self.table, f >> I64(rem_bits), f & ((I64(1) << rem_bits) - 1), rem_bits)
        out = shift_round(mant, ipart + out_fmt.frac - EXP_MANT)
        return saturate(out, out_fmt, counter, stage)


LOG2 = Log2Unit()
EXP2 = Exp2Unit()


def rsqrt(x: np.ndarray, in_frac: int, out_fmt: Fmt, counter: SatCounter | None = None,
          stage: str = "") -> np.ndarray:
    """1/sqrt(x / 2**in_frac) in ``out_fmt``: exp2(−log2(x)/2)."""
    y = rshift_round(-LOG2(x, in_frac), 1)
    return EXP2(y, out_fmt, counter, stage)


def divide(a: np.ndarray, a_frac: int, b: np.ndarray, b_frac: int, out_fmt: Fmt,
           counter: SatCounter | None = None, stage: str = "") -> np.ndarray:
    """a/b in the log domain: exp2(log2 a − log2 b) in ``out_fmt``; 0 where a == 0 (b > 0)."""
    y = LOG2(a, a_frac) - LOG2(b, b_frac)
    out = EXP2(y, out_fmt, counter, stage)
    return np.where(np.asarray(a) > 0, out, I64(0))


def reciprocal(x: np.ndarray, in_frac: int, out_fmt: Fmt, counter: SatCounter | None = None,
               stage: str = "") -> np.ndarray:
    """1/(x / 2**in_frac) in ``out_fmt``: exp2(−log2 x)."""
    return EXP2(-LOG2(x, in_frac), out_fmt, counter, stage)


@dataclass(frozen=True)
class PWLTable:
    """A smooth function as a uniform table with linear interpolation.

    The input (format ``in_fmt``) covers ``[lo, lo + 2**seg_log2 · n_seg)`` in input LSBs;
    ``below``/``above`` say what happens outside: ``"clamp"`` (the end value) or ``"identity"``
    (y = x, requantised to ``out_fmt``). Built by :meth:`build` from a numpy function.
    """

    name: str
    in_fmt: Fmt
    out_fmt: Fmt
    lo: int                 # first table input, in input LSBs
    seg_log2: int           # segment width = 2**seg_log2 input LSBs
    table: np.ndarray       # n_seg + 1 entries in out_fmt
    below: str = "clamp"
    above: str = "clamp"

    @classmethod
    def build(cls, name: str, fn, in_fmt: Fmt, out_fmt: Fmt, lo: float, hi: float,
              n_seg_log2: int, below: str = "clamp", above: str = "clamp") -> "PWLTable":
        """Table of ``fn`` over [lo, hi) with 2**n_seg_log2 segments (hi − lo a power of two
        multiple of the input LSB)."""
        lo_i = int(round(lo * 2 ** in_fmt.frac))
        span = int(round((hi - lo) * 2 ** in_fmt.frac))
        seg_log2 = int(np.log2(span)) - n_seg_log2
        if seg_log2 < 0 or (1 << (seg_log2 + n_seg_log2)) != span:
            raise ValueError(f"{name}: range {lo}..{hi} is not 2**k input LSBs")
        xs = (lo_i + (np.arange(2 ** n_seg_log2 + 1) << seg_log2)) / 2 ** in_fmt.frac
        table = out_fmt.quantize(fn(xs))
        return cls(name, in_fmt, out_fmt, lo_i, seg_log2, table, below, above)

    @property
    def hi(self) -> int:
        return self.lo + ((len(self.table) - 1) << self.seg_log2)

    def __call__(self, x: np.ndarray, counter: SatCounter | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=I64)
        d = np.clip(x - self.lo, 0, (self.hi - self.lo) - 1)
        idx = d >> I64(self.seg_log2)
        rem = d & ((I64(1) << self.seg_log2) - 1)
        y = _interp(self.table, idx, rem, self.seg_log2)
        if self.below == "identity" or self.above == "identity":
            ident = saturate(rshift_round(x, self.in_fmt.frac - self.out_fmt.frac),
                             self.out_fmt, counter, self.name)
            if self.below == "identity":
                y = np.where(x < self.lo, ident, y)
            if self.above == "identity":
                y = np.where(x >= self.hi, ident, y)
        above_end = x >= self.hi
        if self.above == "clamp":
            y = np.where(above_end, self.table[-1], y)
        return y

    def to_dict(self) -> dict:
        return {"name": self.name, "in_fmt": self.in_fmt.to_dict(),
                "out_fmt": self.out_fmt.to_dict(), "lo": self.lo, "seg_log2": self.seg_log2,
                "table": [int(v) for v in self.table], "below": self.below, "above": self.above}

    @classmethod
    def from_dict(cls, d: dict) -> "PWLTable":
        return cls(d["name"], Fmt.from_dict(d["in_fmt"]), Fmt.from_dict(d["out_fmt"]), int(d["lo"]),
                   int(d["seg_log2"]), np.asarray(d["table"], dtype=I64), d["below"], d["above"])


# Float definitions the tables approximate (used at design time and in tests).
def sigmoid_f(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def silu_f(x):
    x = np.asarray(x, dtype=np.float64)
    return x * sigmoid_f(x)


def softplus_f(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def tanh_f(x):
    return np.tanh(np.asarray(x, dtype=np.float64))
