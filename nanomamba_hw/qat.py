"""Quantization-aware fine-tuning: fake INT8 weights with a straight-through estimator.

The fixed model (``nanomamba_hw.fixed``) stores the weights of every linear layer as INT8 with
one scale per output channel, s_o = max|W_o| / 127 and Wq = round(W / s) (``QLinear``). This
module makes a float model's weights *exactly* representable that way:

- :func:`fake_quant` (a context manager) makes every such layer compute with
  Q(W) = clamp(round(W / s), −127, 127) · s, s = max|W_row| / 127 (detached), while the gradient
  goes straight through to the float W (``W + (Q(W) − W).detach()``). Inside it, the model's
  forward is that of the snapped model; leaving it restores the plain float layers with the same
  ``nn.Parameter`` objects, so an optimiser keeps working across it.
- :func:`snap_` writes Q(W) into the weights: each row's largest |weight| keeps its value
  (±127·s) and every other weight lands on the grid k·s. Snapping is idempotent.
- :func:`grid_error` measures how far a model is from that grid.

Only weights are touched. Biases, LayerNorm, PCEN, the SNR estimator and the SSM parameters
(A_log, D, alpha) stay float: the fixed model quantizes them separately, at higher precision.
Rounding is half away from zero, as in ``fixed.linear.round_weights``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

QMAX = 127   # INT8, symmetric


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer whose weight the fixed model stores as INT8 per output
    channel: patch_proj; per block in_proj, conv1d (depthwise: an output channel is one inner
    channel over its taps), x_proj, snr_proj, dt_proj, out_proj; classifier."""
    layers = [("patch_proj", model.patch_proj)]
    for i, blk in enumerate(model.blocks):
        ssm = blk.sa_ssm
        layers += [(f"blocks.{i}.in_proj", blk.in_proj), (f"blocks.{i}.conv1d", blk.conv1d),
                   (f"blocks.{i}.sa_ssm.x_proj", ssm.x_proj),
                   (f"blocks.{i}.sa_ssm.snr_proj", ssm.snr_proj),
                   (f"blocks.{i}.sa_ssm.dt_proj", ssm.dt_proj),
                   (f"blocks.{i}.out_proj", blk.out_proj)]
    layers.append(("classifier", model.classifier))
    return layers


def row_scale(w: torch.Tensor, qmax: int = QMAX) -> torch.Tensor:
    """Per output channel (first axis) s = max|W_row| / qmax, shaped to broadcast against
    ``w``; an all-zero row gets s = 1."""
    amax = w.detach().reshape(w.shape[0], -1).abs().amax(dim=1)
    s = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return s.reshape(-1, *([1] * (w.dim() - 1)))


def quantize_weight(w: torch.Tensor, qmax: int = QMAX) -> torch.Tensor:
    """Q(W) = clamp(round(W / s), −qmax, qmax) · s per output channel (no gradient path).

    Computed in float64 and returned in ``w``'s dtype, so the row maximum comes back unchanged
    and the others are the nearest float32 to k·s."""
    w64 = w.detach().double()
    s = row_scale(w64, qmax)
    r = w64 / s
    q = torch.clamp(torch.sign(r) * torch.floor(r.abs() + 0.5), -qmax, qmax)
    return (q * s).to(w.dtype)


class FakeQuant(nn.Module):
    """Parametrization: forward value Q(W), gradient passed straight through to W."""

    def __init__(self, qmax: int = QMAX):
        super().__init__()
        self.qmax = qmax

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (quantize_weight(w, self.qmax) - w).detach()


@contextmanager
def fake_quant(model: nn.Module, qmax: int = QMAX) -> Iterator[nn.Module]:
    """Within the block, every layer of :func:`quantized_layers` uses fake-quantized weights
    (straight-through gradient). The parameters stay the same objects throughout."""
    layers = [m for _, m in quantized_layers(model)]
    orders = [list(m._parameters) for m in layers]
    try:
        for m in layers:
            parametrize.register_parametrization(m, "weight", FakeQuant(qmax))
        yield model
    finally:
        for m, order in zip(layers, orders):
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
                # removal re-registers "weight" last; restore the order so that state_dict()
                # and parameters() look exactly as before
                params = m._parameters
                m._parameters = type(params)((k, params[k]) for k in order if k in params)


@torch.no_grad()
def snap_(model: nn.Module, qmax: int = QMAX) -> nn.Module:
    """W ← Q(W) in place for every quantized layer; returns ``model``."""
    for _, m in quantized_layers(model):
        m.weight.copy_(quantize_weight(m.weight, qmax))
    return model


def snap_state(model: nn.Module, state: dict[str, torch.Tensor], qmax: int = QMAX
               ) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state dict ``state`` with every quantized weight snapped."""
    out = {k: v.detach().clone() for k, v in state.items()}
    for name, _ in quantized_layers(model):
        out[f"{name}.weight"] = quantize_weight(out[f"{name}.weight"], qmax)
    return out


@torch.no_grad()
def grid_error(model: nn.Module, qmax: int = QMAX) -> dict[str, float]:
    """Per quantized layer, max |W − Q(W)| / s over all weights, in units of that row's step:
    0 for a snapped model (up to float32 rounding, ~1e-5), up to 0.5 otherwise."""
    out = {}
    for name, m in quantized_layers(model):
        w = m.weight.detach().double()
        out[name] = float(((w - quantize_weight(w, qmax)) / row_scale(w, qmax)).abs().max())
    return out
