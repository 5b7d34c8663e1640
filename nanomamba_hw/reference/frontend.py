"""Float front end of NanoMamba: STFT magnitude, mel filterbank, SNR estimator, log-mel and
frequency floor + DualPCEN v1 (model-math.md §1–§3).

Tensor layout follows the published code: spectra are (batch, freq/band, time).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# Small constants of the float model (model-math.md §1–§3). They tie the model to float audio in
# [-1, 1] at torch.stft's unnormalised scale; the fixed-point model maps them to integer levels.
LOG_EPS = 1e-8          # ln(mel + LOG_EPS) of the log-mel front end, SF's ln(E + LOG_EPS)
RATIO_EPS = 1e-8        # SNR ratio denominator, SF and tilt denominators
PCEN_EPS = 1e-6         # PCEN: (PCEN_EPS + M)^-alpha
SNR_STATIC_FRAMES = 5   # n0 = mean of the first 5 frames' magnitude
FLOOR_TOP = 0.05        # frequency floor f_m = FLOOR_TOP * exp(-FLOOR_DECAY * m / (n_mels - 1))
FLOOR_DECAY = 3.0
TILT_THRESHOLD = 0.6    # sf+tilt routing: SF' = SF + (1 - SF) * relu(tilt - 0.6)


def hann_window(n_fft: int) -> torch.Tensor:
    """Periodic Hann window w[k] = 0.5 (1 - cos(2πk/n)), as torch.hann_window's default."""
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32)


def stft_magnitude(audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """|STFT| of (B, samples) float audio → (B, n_fft/2+1, frames).

    ``torch.stft`` defaults: centre framing with 256 samples of reflect padding on each side,
    periodic Hann window, one-sided, unnormalised; the magnitude, not the power.
    """
    spec = torch.stft(audio, n_fft=n_fft, hop_length=hop, win_length=n_fft,
                      window=hann_window(n_fft).to(audio.device, audio.dtype),
                      center=True, pad_mode="reflect", normalized=False, onesided=True,
                      return_complex=True)
    return spec.abs()


def mel_filterbank(n_mels: int = 40, n_fft: int = 512, sample_rate: int = 16000) -> np.ndarray:
    """HTK triangular mel filterbank (n_mels, n_fft/2+1), no area normalisation (model-math §1).

    n_mels + 2 points equally spaced in mel between 0 and sr/2 are mapped to FFT bins with the
    (n_fft + 1) convention, bp = floor((n_fft + 1) · hz / sr). Filter i rises from bp[i] to a
    peak of 1 at bp[i+1] and falls to bp[i+2].
    """
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2)
    bins = np.floor((n_fft + 1) * mel_to_hz(mels) / sample_rate).astype(np.int64)
    fb = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float64)
    for i in range(n_mels):
        lo, mid, hi = bins[i], bins[i + 1], bins[i + 2]
        for j in range(lo, mid):
            fb[i, j] = (j - lo) / max(mid - lo, 1)
        for j in range(mid, hi):
            fb[i, j] = (hi - j) / max(hi - mid, 1)
    return fb.astype(np.float32)


def frequency_floor(n_mels: int = 40) -> np.ndarray:
    """Per-band floor of the DualPCEN front end: 0.05 · exp(-3 m / (n_mels - 1))."""
    m = np.arange(n_mels, dtype=np.float64)
    return (FLOOR_TOP * np.exp(-FLOOR_DECAY * m / (n_mels - 1))).astype(np.float32)


class SNREstimator(nn.Module):
    """Per-band SNR in [0, 1) from the STFT magnitude (model-math.md §2).

    The noise estimate starts from n0, the mean magnitude of the first 5 frames (a 4-frame
    look-ahead). ``static`` uses n0 for every frame; ``ema`` tracks it with an asymmetric EMA
    (rate γ when the magnitude rises above the estimate, β otherwise) floored at n0 / 2.
    The per-bin ratio is projected onto the mel bands and squashed: tanh(W·r / 10).
    """

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.noise_scale = nn.Parameter(torch.tensor(1.5))
        # Present (and counted) in the published model but never used in its forward pass.
        self.floor = nn.Parameter(torch.tensor(0.02))
        if mode == "ema":
            self.raw_beta = nn.Parameter(torch.tensor(-2.2))
            self.raw_gamma = nn.Parameter(torch.tensor(-3.0))

    def noise_floor(self, mag: torch.Tensor) -> torch.Tensor:
        """Noise magnitude estimate per bin and frame, (B, F, T)."""
        n0 = mag[..., :SNR_STATIC_FRAMES].mean(dim=-1, keepdim=True)
        if self.mode == "static":
            return n0.expand_as(mag)
        beta = torch.sigmoid(self.raw_beta)
        gamma = torch.sigmoid(self.raw_gamma)
        nf = n0[..., 0]
        out = []
        for x in mag.unbind(-1):
            # a = γ where the magnitude rises above the estimate (strict), else β. Written as a
            # 0/1 blend rather than torch.where: same values, much cheaper backward to β, γ.
            rise = (x > nf).to(x.dtype)
            a = gamma * rise + beta * (1 - rise)
            nf = (1 - a) * nf + a * x
            out.append(nf)
        nf_all = torch.stack(out, dim=-1)
        return torch.maximum(nf_all, 0.5 * n0)

    def forward(self, mag: torch.Tensor, mel_fb: torch.Tensor) -> torch.Tensor:
        noise = self.noise_floor(mag)
        ratio = mag / (self.noise_scale.abs() * noise + RATIO_EPS)
        snr_mel = torch.matmul(mel_fb, ratio)
        return torch.tanh(snr_mel / 10.0)


class PCEN(nn.Module):
    """One PCEN expert with per-band learnable s, α, δ, r, each clamped (model-math.md §3).

    out_t = (E_t · (ε + M_t)^-α + δ)^r − δ^r with the causal smoother
    M_t = (1 − s) M_{t−1} + s E_t, M_0 = E_0.
    """

    S_RANGE = (0.05, 0.30)
    ALPHA_RANGE = (0.9, 0.999)
    R_RANGE = (0.05, 0.25)

    def __init__(self, n_mels: int, *, s: float, alpha: float, delta: float, r: float,
                 delta_range: tuple[float, float]):
        super().__init__()
        self.delta_range = delta_range

        def logit(p):
            return math.log(p / (1 - p))

        self.log_s = nn.Parameter(torch.full((n_mels,), logit(s)))
        self.log_alpha = nn.Parameter(torch.full((n_mels,), logit(alpha)))
        self.log_delta = nn.Parameter(torch.full((n_mels,), math.log(delta)))
        self.log_r = nn.Parameter(torch.full((n_mels,), logit(r)))

    def constants(self) -> dict[str, torch.Tensor]:
        """The effective (clamped) per-band s, alpha, delta, r."""
        return {
            "s": torch.sigmoid(self.log_s).clamp(*self.S_RANGE),
            "alpha": torch.sigmoid(self.log_alpha).clamp(*self.ALPHA_RANGE),
            "delta": torch.exp(self.log_delta).clamp(*self.delta_range),
            "r": torch.sigmoid(self.log_r).clamp(*self.R_RANGE),
        }

    def smooth(self, E: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """M_t = (1 − s) M_{t−1} + s E_t with M_0 = E_0; s is per band, (bands,)."""
        frames = E.unbind(-1)
        M = frames[0]
        keep = 1 - s
        out = [M]
        for E_t in frames[1:]:
            M = keep * M + s * E_t
            out.append(M)
        return torch.stack(out, dim=-1)

    def forward(self, E: torch.Tensor) -> torch.Tensor:
        c = self.constants()
        M = self.smooth(E, c["s"])
        alpha, delta, r = (c[k][:, None] for k in ("alpha", "delta", "r"))
        gain = (PCEN_EPS + M).pow(-alpha)
        return (E * gain + delta).pow(r) - delta.pow(r)


class DualPCEN(nn.Module):
    """Two PCEN experts blended per frame by a spectral-flatness gate (DualPCEN v1, §3).

    g_t = σ(gate_temp · (SF'_t − 0.5)), F = g · stationary + (1 − g) · non-stationary.
    ``routing="sf"``: SF' = SF; ``"sf+tilt"``: SF' = SF + (1 − SF) · relu(tilt − 0.6).
    """

    def __init__(self, n_mels: int, routing: str):
        super().__init__()
        self.routing = routing
        self.pcen_nonstat = PCEN(n_mels, s=0.025, alpha=0.99, delta=2.0, r=0.5,
                                 delta_range=(0.5, 5.0))
        self.pcen_stat = PCEN(n_mels, s=0.15, alpha=0.99, delta=0.01, r=0.1,
                              delta_range=(0.001, 0.1))
        self.gate_temp = nn.Parameter(torch.tensor(5.0))

    def flatness(self, E: torch.Tensor) -> torch.Tensor:
        """Routing statistic per frame, (B, T): SF or SF + tilt correction."""
        geo = torch.exp(torch.log(E + LOG_EPS).mean(dim=1))
        arith = E.mean(dim=1)
        sf = (geo / (arith + RATIO_EPS)).clamp(0.0, 1.0)
        if self.routing == "sf":
            return sf
        n = E.shape[1]
        low = E[:, : n // 3].mean(dim=1)
        high = E[:, 2 * n // 3:].mean(dim=1)
        tilt = (low / (low + high + RATIO_EPS)).clamp(0.0, 1.0)
        return sf + (1 - sf) * torch.relu(tilt - TILT_THRESHOLD)

    def gate(self, E: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate_temp * (self.flatness(E) - 0.5))

    def forward(self, E: torch.Tensor) -> dict[str, torch.Tensor]:
        stat = self.pcen_stat(E)
        nonstat = self.pcen_nonstat(E)
        g = self.gate(E)[:, None, :]
        return {"pcen_stat": stat, "pcen_nonstat": nonstat, "gate": g[:, 0],
                "frontend_out": g * stat + (1 - g) * nonstat}
