"""SNR-aware selective state space block (SA-SSM v1) and the pre-norm NanoMamba block
(model-math.md §4). Sequences are (batch, time, channels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SSMConstants

LN_EPS = 1e-5


class SASSM(nn.Module):
    """SA-SSM v1: selective scan whose step Δ and input matrix B are modulated by the SNR.

    Per frame t and inner channel k (E channels, N states):

    - p = W_x·xc → dt_raw (scalar), B (N), C (N); q = W_s·snr + b_s → dt shift q0, gate logits
    - G = σ(q[1:]) (1 − bgf) + bgf; B̃ = B (1 − a + a G)
    - s̄ = mean_band(snr); floor = Δmin + (Δmax − Δmin) s̄; ε = εmax − (εmax − εmin) s̄
    - Δ[k] = softplus(w_dt[k] (dt_raw + q0) + b_dt[k]) + floor
    - h[k,n] = exp(A[k,n] Δ[k]) h[k,n] + Δ[k] B̃[n] xc[k] + ε xc[k];  y[k] = Σ_n h C[n] + D[k] xc[k]

    The five constants are buffers (runtime calibration registers in hardware), set from
    :class:`SSMConstants`.
    """

    def __init__(self, d_inner: int, d_state: int, n_mels: int, constants: SSMConstants):
        super().__init__()
        self.d_inner, self.d_state = d_inner, d_state
        self.x_proj = nn.Linear(d_inner, 2 * d_state + 1, bias=False)
        self.snr_proj = nn.Linear(n_mels, d_state + 1)
        self.dt_proj = nn.Linear(1, d_inner)
        A = torch.log(torch.arange(d_state, dtype=torch.float32) + 1.5)
        self.A_log = nn.Parameter(A.repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.alpha = nn.Parameter(torch.tensor(0.5))
        for name in ("delta_floor_min", "delta_floor_max", "eps_min", "eps_max", "bgate_floor"):
            self.register_buffer(name, torch.tensor(0.0), persistent=False)
        self.set_constants(constants)

    def set_constants(self, c: SSMConstants) -> None:
        """Write the five calibration constants (what the hardware's registers hold)."""
        for name, value in zip(("delta_floor_min", "delta_floor_max", "eps_min", "eps_max",
                                "bgate_floor"), c.as_tuple()):
            getattr(self, name).fill_(float(value))

    def forward(self, xc: torch.Tensor, snr: torch.Tensor,
                probe: dict | None = None) -> torch.Tensor:
        """``probe``, when given, receives the intermediates (for quantization range analysis)."""
        N = self.d_state
        p = self.x_proj(xc)                                    # (B, T, 2N+1)
        dt_raw, Bm, Cm = p[..., :1], p[..., 1:N + 1], p[..., N + 1:]
        q = self.snr_proj(snr)                                 # (B, T, N+1)
        bgf = self.bgate_floor
        G = torch.sigmoid(q[..., 1:]) * (1 - bgf) + bgf
        s_mean = snr.mean(dim=-1, keepdim=True)                # (B, T, 1)
        floor = self.delta_floor_min + (self.delta_floor_max - self.delta_floor_min) * s_mean
        eps = self.eps_max - (self.eps_max - self.eps_min) * s_mean
        delta = F.softplus(self.dt_proj(dt_raw + q[..., :1])) + floor   # (B, T, E)
        B_gated = Bm * (1 - self.alpha + self.alpha * G)       # (B, T, N)
        A = -torch.exp(self.A_log)                             # (E, N)
        dA = torch.exp(A * delta[..., None])                   # (B, T, E, N)
        # Input to every state: Δ·B̃·x through B plus the ε·x bypass.
        dBx = (delta[..., None] * B_gated[..., None, :] + eps[..., None]) * xc[..., None]
        # The recurrence is the only sequential part: h_t = dA_t ⊙ h_{t−1} + dBx_t, h_{−1} = 0.
        # unbind() gives the per-frame slices with a single backward node; indexing dA[:, t]
        # would make autograd build a full-size zero gradient for every frame (slow on CPU).
        h = xc.new_zeros(xc.shape[0], self.d_inner, N)
        hs = []
        for dA_t, dBx_t in zip(dA.unbind(1), dBx.unbind(1)):
            h = dA_t * h + dBx_t
            hs.append(h)
        h_all = torch.stack(hs, dim=1)                         # (B, T, E, N)
        # Readout for all frames at once: y_t[k] = Σ_n h_t[k,n] C_t[n] + D[k] xc_t[k].
        y = torch.einsum("bten,btn->bte", h_all, Cm) + self.D * xc
        if probe is not None:
            probe.update(dt_raw=dt_raw, B=Bm, C=Cm, q=q, gate=G, s_mean=s_mean, floor=floor,
                         eps=eps, dt_pre=self.dt_proj(dt_raw + q[..., :1]), delta=delta,
                         B_gated=B_gated, dA=dA, y=y,
                         h_absmax=h_all.detach().abs().amax(dim=(1, 2, 3)))
        return y


class NanoMambaBlock(nn.Module):
    """Pre-norm residual block: LN → in_proj → causal depthwise conv → SiLU → SA-SSM,
    gated by SiLU(z) → out_proj, plus the residual."""

    def __init__(self, d_model: int, d_inner: int, d_state: int, d_conv: int, n_mels: int,
                 constants: SSMConstants):
        super().__init__()
        self.d_inner = d_inner
        self.norm = nn.LayerNorm(d_model, eps=LN_EPS)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        # Padding d_conv-1 on both sides and keeping the first T outputs makes it causal.
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.sa_ssm = SASSM(d_inner, d_state, n_mels, constants)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor, snr: torch.Tensor,
                probe: dict | None = None) -> torch.Tensor:
        T = x.shape[1]
        u = self.norm(x)
        xz = self.in_proj(u)
        xb, z = xz[..., :self.d_inner], xz[..., self.d_inner:]
        c = self.conv1d(xb.transpose(1, 2))[..., :T].transpose(1, 2)
        xc = F.silu(c)
        y = self.sa_ssm(xc, snr, probe)
        yz = y * F.silu(z)
        out = self.out_proj(yz) + x
        if probe is not None:
            probe.update(ln=u, xb=xb, z=z, conv=c, xc=xc, silu_z=F.silu(z), yz=yz, out=out)
        return out

