"""The float NanoMamba model: one configurable implementation of every variant.

audio (B, 16000) → |STFT| → SNR (B, 40, T) and mel → log-mel or floor + DualPCEN →
InstanceNorm over time → patch projection → N × NanoMambaBlock(x, snr) → LayerNorm →
mean over time → classifier → logits (B, 12).   (model-math.md, "Pipeline")
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, SSMConstants
from .frontend import (LOG_EPS, DualPCEN, SNREstimator, frequency_floor, mel_filterbank,
                       stft_magnitude)
from .ssm import LN_EPS, NanoMambaBlock

IN_EPS = 1e-5   # InstanceNorm1d default eps


class NanoMamba(nn.Module):
    """NanoMamba keyword spotter for any :class:`ModelConfig`.

    ``forward(audio)`` gives logits; ``stages(audio)`` gives every intermediate the published
    reference outputs store (``stft_mag``, ``snr_mel``, ``instnorm_out``, ``block0_out``, …),
    in the published layouts, for stage-by-stage checks.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        # Fixed buffers: recomputed from the formulas, not stored in our checkpoints.
        self.register_buffer("mel_fb", torch.from_numpy(
            mel_filterbank(c.n_mels, c.n_fft, c.sample_rate)), persistent=False)
        self.register_buffer("freq_floor", torch.from_numpy(frequency_floor(c.n_mels)),
                             persistent=False)
        self.snr_estimator = SNREstimator(c.snr_mode)
        if c.frontend == "dualpcen":
            self.dual_pcen = DualPCEN(c.n_mels, c.routing)
        self.patch_proj = nn.Linear(c.n_mels, c.d_model)
        self.blocks = nn.ModuleList(
            NanoMambaBlock(c.d_model, c.d_inner, c.d_state, c.d_conv, c.n_mels, c.ssm)
            for _ in range(c.n_layers))
        self.final_norm = nn.LayerNorm(c.d_model, eps=LN_EPS)
        self.classifier = nn.Linear(c.d_model, c.n_classes)

    def set_calibration(self, constants: SSMConstants) -> None:
        """Overwrite the SSM constants of every block (the runtime calibration of §7)."""
        for blk in self.blocks:
            blk.sa_ssm.set_constants(constants)
        self.config = self.config.replace(ssm=constants)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def stages(self, audio: torch.Tensor, probe: bool = False,
               feed: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Run the model on (B, samples) float audio, returning every intermediate.

        With ``probe=True`` the blocks' internals are added as ``block{i}.{name}`` (LayerNorm
        output, conv, Δ, gates, scan output …) for the quantizer's range analysis.

        ``feed``: stage outputs (same keys, same shapes) that replace the model's own as the
        next stage's input — each stage then runs on exactly the given input, so its own
        arithmetic can be compared with a reference that stored every stage, free of the
        rounding carried in from the stages before it. The returned values are the model's.
        """
        c = self.config
        out: dict[str, torch.Tensor] = {}

        def put(key: str, value: torch.Tensor) -> torch.Tensor:
            out[key] = value
            return feed[key] if feed is not None and key in feed else value

        mag = put("stft_mag", stft_magnitude(audio, c.n_fft, c.hop))  # (B, 257, T)
        snr = put("snr_mel", self.snr_estimator(mag, self.mel_fb))     # (B, 40, T)
        mel = put("mel", torch.matmul(self.mel_fb, mag))               # (B, 40, T)
        if c.frontend == "logmel":
            feat = torch.log(mel + LOG_EPS)
        else:
            floored = put("mel_floored", torch.maximum(mel, self.freq_floor[:, None]))
            dp = self.dual_pcen(floored)
            out.update(dp)
            feat = put("frontend_out", dp["frontend_out"])
        feat = put("instnorm_in", feat)
        # InstanceNorm1d defaults: per clip and band over all T frames (non-causal), biased
        # variance, no affine. The torch kernel is used so rounding matches the original.
        normed = put("instnorm_out", F.instance_norm(feat, eps=IN_EPS))
        x = put("patch_proj", self.patch_proj(normed.transpose(1, 2)))  # (B, T, d)
        snr_t = snr.transpose(1, 2)                                    # (B, T, 40)
        for i, blk in enumerate(self.blocks):
            inner: dict | None = {} if probe else None
            x = put(f"block{i}_out", blk(x, snr_t, inner))
            if inner is not None:
                out.update({f"block{i}.{k}": v for k, v in inner.items()})
        x = put("final_norm", self.final_norm(x))
        pooled = put("pooled", x.mean(dim=1))
        out["logits"] = self.classifier(pooled)
        return out

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.stages(audio)["logits"]
