"""Normalisations in integers: instance norm over the clip, LayerNorm over channels.

Both compute exact integer sums, an exact integer variance numerator, and one inverse square
root from the log2/exp2 units returned as a floating mantissa/exponent pair, so that neither a
tiny nor a huge variance costs precision or overflows:

    num = n·Σx² − (Σx)²  (= n²·var, exact)       rs = 1/sqrt(num + n²·eps)  (mantissa · 2^e)
    y_i = (n·x_i − Σx) · rs                      (= (x_i − μ)/sqrt(var + eps))

**Instance norm** (per clip and band, over T = 101 frames; the feature buffer accumulates Σx
and Σx² while features arrive). **LayerNorm** (per frame, over d channels) then applies γ, β.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .funcs import EXP2, EXP_MANT, LOG2, LOG_FRAC
from .ops import I64, Fmt, SatCounter, check_range, rshift_round, saturate, shift_round

IN_EPS = 1e-5
LN_EPS = 1e-5
RS_MANT_FMT = Fmt(EXP_MANT + 2, EXP_MANT, signed=False)   # rsqrt mantissa in [1, 2]
GAMMA_FMT = Fmt(16, 11)           # LayerNorm γ (observed up to 3.5)


def rsqrt_parts(num: np.ndarray, frac: int) -> tuple[np.ndarray, np.ndarray]:
    """1/sqrt(num / 2**frac) as (mantissa u17.16, exponent): value = m · 2**(e − 16)."""
    y = rshift_round(-LOG2(num, frac), 1)
    e = y >> I64(LOG_FRAC)
    m = EXP2(y - (e << I64(LOG_FRAC)), RS_MANT_FMT)  # 2**frac(y): [1, 2] with EXP_MANT bits
    return m, e


def normalize(x: np.ndarray, x_frac: int, axis: int, out_fmt: Fmt, eps: float,
              sat: SatCounter | None = None, stage: str = "") -> np.ndarray:
    """(x − mean)/sqrt(var + eps) along ``axis`` → out_fmt, integer only.

    Returns the normalised values; the statistics are exact integers up to the rsqrt.
    """
    x = np.asarray(x, dtype=I64)
    n = x.shape[axis]
    s1 = x.sum(axis=axis, keepdims=True)
    s2 = (x * x).sum(axis=axis, keepdims=True)
    num = n * s2 - s1 * s1                                   # frac 2·x_frac, ≥ 0
    check_range(num, 63, stage + " variance numerator")
    num = num + int(np.floor(eps * n * n * 2.0 ** (2 * x_frac) + 0.5))
    m, e = rsqrt_parts(num, 2 * x_frac)
    centred = n * x - s1                                     # frac x_frac
    check_range(centred, 46, stage + " centred value")
    prod = centred * m                                       # ≤ 46 + 17 bits
    # value = centred · m · 2**(e − 16) / 2**x_frac  →  out_fmt.frac fractional bits
    y = shift_round(prod, e - EXP_MANT - x_frac + out_fmt.frac)
    return saturate(y, out_fmt, sat, stage)


@dataclass(frozen=True)
class LayerNormParams:
    """γ (GAMMA_FMT) and β (in the output format) of one LayerNorm."""

    gamma: np.ndarray
    beta: np.ndarray
    out_fmt: Fmt
    norm_frac: int = 12          # fractional bits of the normalised value before γ

    @classmethod
    def from_float(cls, gamma, beta, out_fmt: Fmt) -> "LayerNormParams":
        return cls(GAMMA_FMT.quantize(gamma), out_fmt.quantize(beta), out_fmt)

    def to_dict(self) -> dict:
        return {"gamma": [int(v) for v in self.gamma], "beta": [int(v) for v in self.beta],
                "out_fmt": self.out_fmt.to_dict(), "norm_frac": self.norm_frac}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerNormParams":
        return cls(np.asarray(d["gamma"], dtype=I64), np.asarray(d["beta"], dtype=I64),
                   Fmt.from_dict(d["out_fmt"]), int(d["norm_frac"]))


def layer_norm(p: LayerNormParams, x: np.ndarray, x_frac: int, sat: SatCounter | None = None,
               stage: str = "ln") -> np.ndarray:
    """LayerNorm over the last axis: normalise (s?.norm_frac), × γ, + β → p.out_fmt."""
    norm_fmt = Fmt(p.norm_frac + 6, p.norm_frac)             # |normalised| ≤ sqrt(d) < 32
    v = normalize(x, x_frac, -1, norm_fmt, LN_EPS, sat, stage + "_norm")
    y = rshift_round(v * p.gamma, p.norm_frac + GAMMA_FMT.frac - p.out_fmt.frac) + p.beta
    return saturate(y, p.out_fmt, sat, stage)
