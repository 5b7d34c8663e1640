"""Integer primitives of the fixed-point model: formats, rounding shifts, saturation.

Every value in ``nanomamba_hw.fixed`` is a numpy int64 array holding a two's-complement
integer of a known :class:`Fmt` (``bits`` wide, ``frac`` fractional bits). The rules here are
the hardware's rules, bit for bit:

- :func:`rshift_round` — arithmetic right shift rounding half up (add ``2**(s-1)``, then
  ``>> s``): one adder and wiring in hardware;
- :func:`saturate` — clamp to the format's range, counting every clamped element per stage so
  a report can say where, and how often, a design clamps;
- multiplies are exact (int64 never overflows for the widths used; :func:`check_range`
  asserts it where widths are data dependent).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

I64 = np.int64


@dataclass(frozen=True)
class Fmt:
    """A fixed-point format: ``bits`` total width, ``frac`` fractional bits, signedness.

    The integer ``v`` stands for ``v / 2**frac``.
    """

    bits: int
    frac: int
    signed: bool = True

    @property
    def min_int(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def max_value(self) -> float:
        return self.max_int / (1 << self.frac) if self.frac >= 0 else self.max_int * (1 << -self.frac)

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    def quantize(self, x, counter: "SatCounter | None" = None, stage: str = "") -> np.ndarray:
        """Float → integer of this format: round half away from zero, then saturate.

        Used only for constants (weights, tables) and for test inputs, never in the datapath.
        """
        v = np.asarray(x, dtype=np.float64) * (2.0 ** self.frac)
        q = np.sign(v) * np.floor(np.abs(v) + 0.5)
        q = np.clip(q, -2.0 ** 62, 2.0 ** 62).astype(I64)
        return saturate(q, self, counter, stage)

    def to_float(self, v) -> np.ndarray:
        return np.asarray(v, dtype=np.float64) / (2.0 ** self.frac)

    def to_dict(self) -> dict:
        return {"bits": self.bits, "frac": self.frac, "signed": self.signed}

    @classmethod
    def from_dict(cls, d: dict) -> "Fmt":
        return cls(int(d["bits"]), int(d["frac"]), bool(d["signed"]))

    def __str__(self) -> str:
        kind = "s" if self.signed else "u"
        return f"{kind}{self.bits}.{self.frac}"


class SatCounter(Counter):
    """Counts saturated (clamped) elements per stage name."""

    def total(self) -> int:  # Counter.total exists on 3.10+, kept explicit for readers
        return int(sum(self.values()))


def rshift_round(x: np.ndarray, s: int) -> np.ndarray:
    """``x / 2**s`` rounded half up: ``(x + 2**(s-1)) >> s``; a left shift for ``s < 0``."""
    x = np.asarray(x, dtype=I64)
    if s > 0:
        return (x + (I64(1) << I64(s - 1))) >> I64(s)
    if s < 0:
        return x << I64(-s)
    return x.copy()


def saturate(x: np.ndarray, fmt: Fmt, counter: SatCounter | None = None,
             stage: str = "") -> np.ndarray:
    """Clamp to ``fmt``'s integer range, adding the number of clamped elements to ``counter``."""
    x = np.asarray(x, dtype=I64)
    lo, hi = fmt.min_int, fmt.max_int
    if counter is not None:
        n = int(np.count_nonzero((x < lo) | (x > hi)))
        if n:
            counter[stage] += n
    return np.clip(x, lo, hi)


def requant(x: np.ndarray, from_frac: int, fmt: Fmt, counter: SatCounter | None = None,
            stage: str = "") -> np.ndarray:
    """Move ``x`` (with ``from_frac`` fractional bits) to ``fmt``: round-half-up shift, saturate."""
    return saturate(rshift_round(x, from_frac - fmt.frac), fmt, counter, stage)


def check_range(x: np.ndarray, bits: int, what: str) -> None:
    """Assert a signed intermediate fits ``bits`` (a design-time guarantee, not a saturation)."""
    x = np.asarray(x)
    if x.size and (x.max() >= (1 << (bits - 1)) or x.min() < -(1 << (bits - 1))):
        raise OverflowError(f"{what}: value exceeds the {bits}-bit datapath "
                            f"(range {x.min()}..{x.max()})")


def shift_round(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """x · 2**shift per element (shift may be negative), rounding half up on right shifts.

    Right shifts beyond 62 give 0; left shifts that would pass 2**62 give 2**62 (callers
    saturate to their format). This is the exp2 unit's output barrel shifter.
    """
    x = np.asarray(x, dtype=I64)
    shift = np.asarray(shift, dtype=I64)
    r = np.clip(-shift, 0, 62)
    right = (x + np.where(r > 0, I64(1) << np.maximum(r - 1, 0), I64(0))) >> r
    width = leading_one(np.maximum(x, 1)) + 1
    l = np.clip(shift, 0, 62)
    left = np.where(width + l > 62, I64(1) << I64(62), x << l)
    return np.where(shift >= 0, left, right)


def leading_one(x: np.ndarray) -> np.ndarray:
    """Position of the most significant 1 of positive integers (floor(log2 x)); -1 for 0."""
    x = np.asarray(x, dtype=I64)
    out = np.full(x.shape, -1, dtype=I64)
    v = x.copy()
    # Binary search over bit positions, vectorised: exact for 0 <= x < 2**63.
    for shift in (32, 16, 8, 4, 2, 1):
        big = v >= (I64(1) << I64(shift))
        out = np.where(big, out + shift, out)
        v = np.where(big, v >> I64(shift), v)
    return np.where(x > 0, out + 1, -1)


def isqrt(x: np.ndarray) -> np.ndarray:
    """Exact integer square root floor(sqrt(x)) of non-negative int64, vectorised.

    Bit-by-bit (restoring) method, the same recurrence a serial hardware unit runs.
    """
    x = np.asarray(x, dtype=I64)
    if np.any(x < 0):
        raise ValueError("isqrt of a negative number")
    res = np.zeros_like(x)
    rem = x.copy()
    bit = I64(1) << I64(62)
    while bit:
        trial = res + bit
        ge = rem >= trial
        rem = np.where(ge, rem - trial, rem)
        res = np.where(ge, (res >> I64(1)) + bit, res >> I64(1))
        bit >>= I64(2)
    return res
