"""Mel filterbank in integers: 454 nonzero triangular weights (u16.15) applied to |X|.

The same sparse weights serve the mel spectrum (on the magnitude) and the SNR projection (on
the per-bin ratio), so the hardware keeps one weight ROM listing, band by band, the
(bin, weight) pairs of each triangle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..reference.frontend import mel_filterbank
from .ops import I64, Fmt, SatCounter, rshift_round, saturate
from .stft import MAG_FMT

MEL_W_FMT = Fmt(16, 15, signed=False)   # triangle weights in [0, 1]; 1.0 = 32768
MEL_FMT = Fmt(28, 16, signed=False)     # mel magnitude, float units, max 4096


@dataclass(frozen=True)
class SparseFilterbank:
    """Nonzero weights of the triangular filterbank, ordered band by band.

    ``band[i]``, ``bin[i]``, ``weight[i]`` (u16.15) for i over the 454 nonzeros; ``start[m]`` is
    the index of band m's first entry (``start[40]`` = 454).
    """

    band: np.ndarray
    bin: np.ndarray
    weight: np.ndarray
    start: np.ndarray
    dense: np.ndarray       # (n_mels, 257) int64, the same weights as a matrix

    @classmethod
    def build(cls, n_mels: int = 40, n_fft: int = 512, sample_rate: int = 16000) -> "SparseFilterbank":
        fb = mel_filterbank(n_mels, n_fft, sample_rate).astype(np.float64)
        q = MEL_W_FMT.quantize(fb)
        band, bins = np.nonzero(q)
        start = np.searchsorted(band, np.arange(n_mels + 1))
        return cls(band.astype(I64), bins.astype(I64), q[band, bins], start.astype(I64), q)

    @property
    def nnz(self) -> int:
        return len(self.weight)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Σ_j W[m, j] · x[..., j, t] exactly: (B, 257, T) → (B, n_mels, T), frac += 15."""
        return np.einsum("mf,bft->bmt", self.dense, np.asarray(x, dtype=I64))


def mel_spectrum(fb: SparseFilterbank, mag: np.ndarray, sat: SatCounter | None = None) -> np.ndarray:
    """|X| (u24.15) → mel (MEL_FMT, u28.16), rounding half up."""
    acc = fb.apply(mag)
    return saturate(rshift_round(acc, MAG_FMT.frac + MEL_W_FMT.frac - MEL_FMT.frac),
                    MEL_FMT, sat, "mel")
