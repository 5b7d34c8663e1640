"""Quantized linear layers: the MAC engine's arithmetic.

Weights are INT8 (or INT16) with one scale per output channel, folded into a fixed-point
multiplier. For output channel o:

    acc   = Σ_i Wq[o, i] · x[i]                       exact, ``acc_bits`` wide (analytic bound)
    acc'  = round(acc / 2**pre)                       fits the DSP's 25-bit port
    out   = sat(round((acc' · m[o] + b[o]) / 2**sh[o]))   m[o] ∈ [2**16, 2**17): 17-bit multiplier

``m[o] / 2**sh[o]`` ≈ scale[o] · 2**(out_frac − in_frac + pre) (times an optional constant,
e.g. the 1/101 of the average pool), ``b[o]`` is the bias at the product's scale. The same
form serves patch projection, in/x/snr/dt/out projections, the depthwise convolution (each
channel over its own 3-frame history) and the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ops import I64, Fmt, SatCounter, rshift_round, saturate

MULT_BITS = 17        # requantisation multiplier width (unsigned, fits the 18-bit DSP port)
ACC_PORT_BITS = 25    # accumulator is rounded to this width before the multiply


def round_weights(W: np.ndarray, scale: np.ndarray, qmax: int,
                  moments: np.ndarray | None = None, sweeps: int = 3) -> np.ndarray:
    """Integer weights round(W / scale), each rounded up or down so as to minimise the output
    error on the calibration inputs rather than the weight error.

    With the inputs' second moments C = E[x xᵀ] (per output row for depthwise layers), the
    expected squared output error of row o is eᵀ C e with e = (Wq[o] · scale[o] − W[o]).
    Starting from nearest rounding, each weight may move to the other neighbour of its float
    value (never further) when that lowers eᵀ C e; a few sweeps settle it. Without moments
    this is plain nearest rounding.
    """
    ratio = W / scale[:, None]
    wq = np.clip(np.floor(np.abs(ratio) + 0.5) * np.sign(ratio), -qmax, qmax)
    if moments is None:
        return wq.astype(I64)
    for o in range(W.shape[0]):
        C = moments[o] if moments.ndim == 3 else moments
        e = wq[o] - ratio[o]                      # error in units of the scale
        Ce = C @ e
        for _ in range(sweeps):
            changed = False
            for i in range(W.shape[1]):
                step = -1.0 if e[i] > 0 else 1.0  # the other neighbour of the float value
                if abs(wq[o, i] + step) > qmax or (e[i] == 0):
                    continue
                gain = 2 * step * Ce[i] + C[i, i]
                if gain < -1e-12 * max(C[i, i], 1e-30):
                    wq[o, i] += step
                    e[i] += step
                    Ce += step * C[:, i]
                    changed = True
            if not changed:
                break
    return wq.astype(I64)


SCALE_SEARCH = np.linspace(1.0, 0.8, 11)   # candidate fractions of the max-abs scale


def _row_error(W, scale, wq, C) -> float:
    e = wq * scale - W
    return float(e @ C @ e)


def _search_scales(W, scale, wq, qmax, moments):
    """Per output channel, the scale (a fraction of max|W|/qmax: clipping the largest weights
    a little) whose rounded weights give the least expected output error eᵀ C e."""
    scale, wq = scale.copy(), wq.copy()
    for o in range(W.shape[0]):
        C = moments[o] if moments.ndim == 3 else moments
        best = _row_error(W[o], scale[o], wq[o], C)
        for frac in SCALE_SEARCH[1:]:
            s = np.array([scale[o] * frac]) if False else np.array([np.abs(W[o]).max() / qmax * frac])
            if s[0] <= 0:
                continue
            cand = round_weights(W[o:o + 1], s, qmax, C[None] if C.ndim == 2 else C[None])[0]
            err = _row_error(W[o], s[0], cand, C)
            if err < best:
                best, scale[o], wq[o] = err, s[0], cand
    return scale, wq


def _shift_each(x: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """Per-channel rounding right shift (sh ≥ 0, broadcast over the last axis)."""
    return (x + np.where(sh > 0, I64(1) << np.maximum(sh - 1, 0), I64(0))) >> sh


@dataclass(frozen=True)
class QLinear:
    """A quantized dense (or depthwise) layer, see the module docstring."""

    name: str
    w: np.ndarray          # (out, in) integer weights
    weight_bits: int
    in_fmt: Fmt
    out_fmt: Fmt
    pre: int
    m: np.ndarray          # (out,) multipliers
    sh: np.ndarray         # (out,) right shifts
    b: np.ndarray          # (out,) biases at the product scale
    acc_bits: int
    depthwise: bool = False
    scale: np.ndarray | None = None   # float per-channel scales (reporting only)

    @classmethod
    def from_float(cls, name: str, W, bias, in_fmt: Fmt, out_fmt: Fmt, weight_bits: int = 8,
                   extra_scale: float = 1.0, depthwise: bool = False,
                   moments: np.ndarray | None = None) -> "QLinear":
        """Quantize float weights ``W`` (out, in) and ``bias``; ``moments`` (E[x xᵀ] of the
        layer's inputs on the calibration set, (in, in), or (out, in, in) for depthwise) makes
        the rounding minimise the output error (:func:`round_weights`)."""
        W = np.asarray(W, dtype=np.float64)
        qmax = 2 ** (weight_bits - 1) - 1
        amax = np.abs(W).max(axis=1)
        scale = np.where(amax > 0, amax / qmax, 1.0)
        wq = round_weights(W, scale, qmax, moments)
        if moments is not None:
            scale, wq = _search_scales(W, scale, wq, qmax, moments)
        bound = int(np.abs(wq).sum(axis=1).max()) * max(-in_fmt.min_int, in_fmt.max_int)
        acc_bits = max(bound, 1).bit_length() + 1
        pre = max(0, acc_bits - ACC_PORT_BITS)
        f = extra_scale * scale * 2.0 ** (out_fmt.frac - in_fmt.frac + pre)
        # largest shift keeping m below 2**MULT_BITS: m ∈ [2**16, 2**17)
        sh = np.floor(np.log2((2 ** MULT_BITS - 1) / f)).astype(I64)
        if np.any(sh < 0):
            raise ValueError(f"{name}: output format {out_fmt} too fine for its weight scale")
        m = np.floor(f * 2.0 ** sh + 0.5).astype(I64)
        bias = np.zeros(W.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
        b = np.floor(bias * 2.0 ** (out_fmt.frac + sh.astype(np.float64)) + 0.5).astype(I64)
        return cls(name, wq, weight_bits, in_fmt, out_fmt, pre, m, sh, b, acc_bits, depthwise, scale)

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        """Σ_i Wq[o, i] · x[…, i] (dense: x (…, in) → (…, out); depthwise: x (…, out, in))."""
        x = np.asarray(x, dtype=I64)
        if self.depthwise:
            return (x * self.w).sum(axis=-1)
        return x @ self.w.T

    def __call__(self, x: np.ndarray, sat: SatCounter | None = None) -> np.ndarray:
        acc = rshift_round(self.accumulate(x), self.pre)
        y = _shift_each(acc * self.m + self.b, self.sh)
        return saturate(y, self.out_fmt, sat, self.name)

    def dequantized(self) -> tuple[np.ndarray, np.ndarray]:
        """The float weights and bias this layer implements (for error analysis)."""
        f = self.m / 2.0 ** self.sh
        W = self.w * (f / 2.0 ** (self.out_fmt.frac - self.in_fmt.frac + self.pre))[:, None]
        return W, self.b / 2.0 ** (self.out_fmt.frac + self.sh.astype(np.float64))

    def to_dict(self) -> dict:
        return {"name": self.name, "w": self.w.tolist(), "weight_bits": self.weight_bits,
                "in_fmt": self.in_fmt.to_dict(), "out_fmt": self.out_fmt.to_dict(),
                "pre": self.pre, "m": self.m.tolist(), "sh": self.sh.tolist(),
                "b": self.b.tolist(), "acc_bits": self.acc_bits, "depthwise": self.depthwise}

    @classmethod
    def from_dict(cls, d: dict) -> "QLinear":
        arr = lambda k: np.asarray(d[k], dtype=I64)  # noqa: E731
        return cls(d["name"], arr("w"), int(d["weight_bits"]), Fmt.from_dict(d["in_fmt"]),
                   Fmt.from_dict(d["out_fmt"]), int(d["pre"]), arr("m"), arr("sh"), arr("b"),
                   int(d["acc_bits"]), bool(d["depthwise"]))
