"""SNR estimator in integers (model-math.md §2).

Per bin f and frame t, from the magnitude |X| (u24.15):

- ``n0 = round(Σ_{t<5} |X| · 8/5)`` in NOISE_FMT (u27.18: three more fractional bits) — the
  first five frames, so nothing can be emitted before frame 4 has arrived;
- static: noise = n0; EMA: nf starts at n0, ``a = γ if 8|X| > nf else β``,
  ``nf += round(a · (8|X| − nf) / 2**16)``, noise = max(nf, round(n0 / 2));
- ``den = ns · noise + EPS_DEN`` (ns = |noise_scale| in u16.12; EPS_DEN is the float model's
  1e-8 at the product's scale, 2**-30 units);
- ``r = |X| / den`` by the log-domain divider, saturated at RATIO_FMT's top (2048: a single
  bin at that ratio already drives its band's tanh to 1 within 2**-15 — a designed clamp);
- ``snr_mel = round(W · r)`` (u16.8, saturating at 256: also a designed clamp) and
  ``snr = tanh(snr_mel / 10)`` from a 256-segment table over [0, 64), u16.15.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .funcs import PWLTable, divide, tanh_f
from .mel import MEL_W_FMT, SparseFilterbank
from .ops import I64, Fmt, SatCounter, rshift_round, saturate
from .stft import MAG_FMT

STATIC_FRAMES = 5
# n0 = Σ5 · FIVE_RECIP can exceed 2**27 by a hair for magnitudes at the top of u24 (FIVE_RECIP
# is slightly above 8/5 · 2**16), so the noise estimate is 28 bits wide.
NOISE_FMT = Fmt(28, 18, signed=False)
COEF_FMT = Fmt(17, 16, signed=False)        # EMA rates β, γ
NS_FMT = Fmt(16, 12, signed=False)          # |noise_scale|
DEN_FRAC = NOISE_FMT.frac + NS_FMT.frac     # 30
EPS_DEN = int(np.floor(1e-8 * 2 ** DEN_FRAC + 0.5))
RATIO_FMT = Fmt(22, 11, signed=False)
SNR_MEL_FMT = Fmt(16, 8, signed=False)
SNR_FMT = Fmt(16, 15, signed=False)
FIVE_SHIFT = 16
FIVE_RECIP = int(round(8 / 5 * 2 ** FIVE_SHIFT))   # n0 = round(Σ5 · FIVE_RECIP / 2**FIVE_SHIFT)

TANH_TABLE = PWLTable.build("snr_tanh", lambda v: tanh_f(v / 10.0), SNR_MEL_FMT, SNR_FMT,
                            0.0, 64.0, 8)


@dataclass(frozen=True)
class SNRParams:
    """Quantized constants of the SNR estimator."""

    mode: str                 # "static" or "ema"
    noise_scale: int          # |noise_scale| in NS_FMT
    beta: int = 0             # σ(raw_beta) in COEF_FMT
    gamma: int = 0            # σ(raw_gamma) in COEF_FMT

    @classmethod
    def from_float(cls, mode: str, noise_scale: float, raw_beta: float | None = None,
                   raw_gamma: float | None = None) -> "SNRParams":
        ns = int(NS_FMT.quantize(abs(noise_scale)))
        if mode == "static":
            return cls(mode, ns)
        sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
        return cls(mode, ns, int(COEF_FMT.quantize(sig(raw_beta))),
                   int(COEF_FMT.quantize(sig(raw_gamma))))

    def to_dict(self) -> dict:
        return dict(mode=self.mode, noise_scale=self.noise_scale, beta=self.beta, gamma=self.gamma)

    @classmethod
    def from_dict(cls, d: dict) -> "SNRParams":
        return cls(**d)


def noise_floor(p: SNRParams, mag: np.ndarray) -> np.ndarray:
    """Noise estimate per bin and frame, (B, 257, T) in NOISE_FMT."""
    mag = np.asarray(mag, dtype=I64)
    sum5 = mag[..., :STATIC_FRAMES].sum(axis=-1)
    n0 = rshift_round(sum5 * FIVE_RECIP, FIVE_SHIFT)
    if p.mode == "static":
        return np.repeat(n0[..., None], mag.shape[-1], axis=-1)
    x8 = mag << I64(NOISE_FMT.frac - MAG_FMT.frac)
    nf = n0.copy()
    half_n0 = rshift_round(n0, 1)
    out = np.empty_like(mag)
    for t in range(mag.shape[-1]):
        a = np.where(x8[..., t] > nf, I64(p.gamma), I64(p.beta))
        nf = nf + rshift_round(a * (x8[..., t] - nf), COEF_FMT.frac)
        out[..., t] = np.maximum(nf, half_n0)
    return out


def ratio(p: SNRParams, mag: np.ndarray, noise: np.ndarray,
          sat: SatCounter | None = None) -> np.ndarray:
    """|X| / (ns · noise + 1e-8) in RATIO_FMT (saturating, counted as 'snr_ratio')."""
    den = I64(p.noise_scale) * noise + EPS_DEN
    return divide(mag, MAG_FMT.frac, den, DEN_FRAC, RATIO_FMT, sat, "snr_ratio")


def snr_bands(p: SNRParams, fb: SparseFilterbank, mag: np.ndarray,
              sat: SatCounter | None = None) -> np.ndarray:
    """(B, 257, T) magnitude → (B, n_mels, T) SNR in SNR_FMT (values in [0, 1])."""
    r = ratio(p, mag, noise_floor(p, mag), sat)
    acc = fb.apply(r)
    snr_mel = saturate(rshift_round(acc, RATIO_FMT.frac + MEL_W_FMT.frac - SNR_MEL_FMT.frac),
                       SNR_MEL_FMT, sat, "snr_mel")
    return TANH_TABLE(snr_mel)
