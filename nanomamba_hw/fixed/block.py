"""SA-SSM block in integers (model-math.md §4), sub-step by sub-step.

Per frame t (k: inner channel 0…E−1, n: state 0…N−1), formats from the formats table:

 1. u = LayerNorm(x)                                   resid → ln
 2. [xb; z] = in_proj(u)                               → inproj
 3. c = conv_k(xb[t−2], xb[t−1], xb[t]) + bias         → conv   (2 frames of history, zero at start)
 4. xc = SiLU(c)                                       → xc     (table over [−16, 16), y = x above)
 5. [dt_raw; B; C] = x_proj(xc), q = snr_proj(snr)     → xproj, q
 6. s̄ = mean_band(snr); floor = Δmin + (Δmax−Δmin)·s̄; ε = εmax − (εmax−εmin)·s̄   (REG_FMT)
 7. Δ = softplus(dt_proj(dt_raw + q0)) + floor         → dtin, dtpre, delta
 8. G = bgf + (1−bgf)·σ(q[1:]);  B̃ = B·((1−a) + a·G)   → GATE_FMT, GB_FMT, xproj
 9. dBe = Δ·B̃ + ε;  dA = exp2(−|A|·log2(e)·Δ)          → dbx, DA_FMT
10. h = round(dA·h) + round(dBe·xc)                    → h      (the scan; state in RAM)
11. y = round(Σ_n h·C) + round(D·xc)                   → y
12. yz = y·SiLU(z);  x' = x + out_proj(yz)             → siluz, yz, resid

Every rounding is half-up at the stated shift; every store saturates to its format (counted).
The five calibration constants are run-time registers (:class:`SSMRegisters`), not constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import SSMConstants
from .formats import ALPHA_FMT, D_FMT, DA_FMT, GATE_FMT, GB_FMT, REG_FMT, SNR_FMT, Formats
from .funcs import EXP2, LOG_FRAC, PWLTable, sigmoid_f, silu_f, softplus_f
from .linear import QLinear
from .norm import LayerNormParams, layer_norm
from .ops import I64, Fmt, SatCounter, requant, rshift_round, saturate

MEAN_FRAC = 22
A_BITS = 16                     # |A|·log2(e) per (k, n), unsigned


@dataclass(frozen=True)
class SSMRegisters:
    """The five SA-SSM calibration constants as REG_FMT integers (hardware registers 1…5)."""

    delta_floor_min: int
    delta_floor_max: int
    eps_min: int
    eps_max: int
    bgate_floor: int

    @classmethod
    def from_constants(cls, c: SSMConstants) -> "SSMRegisters":
        return cls(*(int(REG_FMT.quantize(v)) for v in c.as_tuple()))

    def as_tuple(self) -> tuple[int, ...]:
        return (self.delta_floor_min, self.delta_floor_max, self.eps_min, self.eps_max,
                self.bgate_floor)

    def to_constants(self) -> SSMConstants:
        return SSMConstants(*(v / 2 ** REG_FMT.frac for v in self.as_tuple()))


def activation_tables(f: Formats) -> dict[str, PWLTable]:
    """The block's smooth-function tables (shared by every layer), built from the formats."""
    return {
        "silu_conv": PWLTable.build("silu_conv", silu_f, f["conv"], f["xc"], -16.0, 16.0, 9,
                                    below="clamp", above="identity"),
        "silu_z": PWLTable.build("silu_z", silu_f, f["inproj"], f["siluz"], -16.0, 16.0, 9,
                                 below="clamp", above="identity"),
        "softplus": PWLTable.build("softplus", softplus_f, f["dtpre"], f["delta"], -16.0, 16.0, 9,
                                   below="clamp", above="identity"),
        "sigmoid": PWLTable.build("bgate_sigmoid", sigmoid_f, f["q"], GATE_FMT, -16.0, 16.0, 9),
    }


@dataclass(frozen=True)
class BlockParams:
    """Quantized constants of one NanoMamba block."""

    d_inner: int
    d_state: int
    ln: LayerNormParams
    in_proj: QLinear
    conv: QLinear            # depthwise, (E, d_conv)
    x_proj: QLinear
    snr_proj: QLinear
    dt_proj: QLinear         # (E, 1)
    out_proj: QLinear
    A: np.ndarray            # (E, N): round(|A|·log2(e) · 2**a_frac)
    a_frac: int
    D: np.ndarray            # (E,) in D_FMT
    alpha: int               # in ALPHA_FMT

    def to_dict(self) -> dict:
        d = {k: getattr(self, k).to_dict() for k in
             ("ln", "in_proj", "conv", "x_proj", "snr_proj", "dt_proj", "out_proj")}
        d.update(d_inner=self.d_inner, d_state=self.d_state, A=self.A.tolist(),
                 a_frac=self.a_frac, D=self.D.tolist(), alpha=self.alpha)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BlockParams":
        lin = {k: QLinear.from_dict(d[k]) for k in
               ("in_proj", "conv", "x_proj", "snr_proj", "dt_proj", "out_proj")}
        return cls(int(d["d_inner"]), int(d["d_state"]), LayerNormParams.from_dict(d["ln"]),
                   A=np.asarray(d["A"], dtype=I64), a_frac=int(d["a_frac"]),
                   D=np.asarray(d["D"], dtype=I64), alpha=int(d["alpha"]), **lin)


def block_from_float(blk, f: Formats, moments: dict[str, np.ndarray] | None = None) -> BlockParams:
    """Quantize a float ``NanoMambaBlock`` with the formats ``f``; ``moments`` (input second
    moments per layer name, from calibration) steer the weight rounding."""
    mo = moments or {}
    wb = f.weight_bits
    ssm = blk.sa_ssm
    npf = lambda t: t.detach().double().numpy()  # noqa: E731
    E, N = ssm.d_inner, ssm.d_state
    A = np.exp(npf(ssm.A_log)) * np.log2(np.e)
    a_frac = A_BITS - max(1, int(np.ceil(np.log2(A.max() + 1e-12))) + 1)
    return BlockParams(
        d_inner=E, d_state=N,
        ln=LayerNormParams.from_float(npf(blk.norm.weight), npf(blk.norm.bias), f["ln"]),
        in_proj=QLinear.from_float("in_proj", npf(blk.in_proj.weight), None, f["ln"], f["inproj"],
                                   wb, moments=mo.get("in_proj")),
        conv=QLinear.from_float("conv", npf(blk.conv1d.weight)[:, 0, :], npf(blk.conv1d.bias),
                                f["inproj"], f["conv"], wb, depthwise=True, moments=mo.get("conv")),
        x_proj=QLinear.from_float("x_proj", npf(ssm.x_proj.weight), None, f["xc"], f["xproj"], wb,
                                  moments=mo.get("x_proj")),
        snr_proj=QLinear.from_float("snr_proj", npf(ssm.snr_proj.weight), npf(ssm.snr_proj.bias),
                                    SNR_FMT, f["q"], wb, moments=mo.get("snr_proj")),
        dt_proj=QLinear.from_float("dt_proj", npf(ssm.dt_proj.weight), npf(ssm.dt_proj.bias),
                                   f["dtin"], f["dtpre"], wb),
        out_proj=QLinear.from_float("out_proj", npf(blk.out_proj.weight), None, f["yz"], f["resid"],
                                    wb, moments=mo.get("out_proj")),
        A=np.floor(A * 2.0 ** a_frac + 0.5).astype(I64), a_frac=a_frac,
        D=D_FMT.quantize(npf(ssm.D)), alpha=int(ALPHA_FMT.quantize(float(ssm.alpha.detach()))),
    )


def snr_terms(snr: np.ndarray, regs: SSMRegisters) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame Δ floor and ε (REG_FMT) from the band-mean SNR: (B, T) each."""
    n = snr.shape[-1]
    s_mean = rshift_round(snr.sum(axis=-1) * int(round(2 ** MEAN_FRAC / n)), MEAN_FRAC)
    floor = regs.delta_floor_min + rshift_round(
        (regs.delta_floor_max - regs.delta_floor_min) * s_mean, SNR_FMT.frac)
    eps = regs.eps_max - rshift_round((regs.eps_max - regs.eps_min) * s_mean, SNR_FMT.frac)
    return floor, eps


def conv_history(xb: np.ndarray, k: int) -> np.ndarray:
    """(B, T, E) → (B, T, E, k): xb[t−k+1 … t] per channel, zeros before the first frame."""
    B, T, E = xb.shape
    padded = np.concatenate([np.zeros((B, k - 1, E), dtype=I64), xb], axis=1)
    return np.stack([padded[:, j:j + T] for j in range(k)], axis=-1)


def run_block(p: BlockParams, f: Formats, tables: dict[str, PWLTable], regs: SSMRegisters,
              x: np.ndarray, snr: np.ndarray, sat: SatCounter | None = None,
              trace: dict | None = None, tag: str = "block") -> np.ndarray:
    """One block over a whole clip: x (B, T, d) in resid, snr (B, T, 40) → (B, T, d) in resid."""
    E, N = p.d_inner, p.d_state
    u = layer_norm(p.ln, x, f["resid"].frac, sat, f"{tag}.ln")
    xz = p.in_proj(u, sat)
    xb, z = xz[..., :E], xz[..., E:]
    c = p.conv(conv_history(xb, p.conv.w.shape[1]), sat)
    xc = tables["silu_conv"](c, sat)
    pr = p.x_proj(xc, sat)
    dt_raw, Bm, Cm = pr[..., :1], pr[..., 1:N + 1], pr[..., N + 1:]
    q = p.snr_proj(snr, sat)
    floor, eps = snr_terms(snr, regs)

    dtin_f = f["dtin"]
    dt_in = saturate(requant(dt_raw, f["xproj"].frac, Fmt(40, dtin_f.frac))
                     + requant(q[..., :1], f["q"].frac, Fmt(40, dtin_f.frac)),
                     dtin_f, sat, f"{tag}.dtin")
    v = p.dt_proj(dt_in, sat)
    dfmt = f["delta"]
    delta = saturate(tables["softplus"](v, sat)
                     + requant(floor, REG_FMT.frac, Fmt(40, dfmt.frac))[..., None],
                     dfmt, sat, f"{tag}.delta")

    G = tables["sigmoid"](q[..., 1:])
    bgf = rshift_round(I64(regs.bgate_floor), REG_FMT.frac - GATE_FMT.frac)
    one_g = 1 << GATE_FMT.frac
    G = bgf + rshift_round(G * (one_g - bgf), GATE_FMT.frac)
    one_a = 1 << ALPHA_FMT.frac
    gB = (one_a - p.alpha) + rshift_round(p.alpha * G, GATE_FMT.frac + ALPHA_FMT.frac - GB_FMT.frac)
    gB = saturate(gB, GB_FMT, sat, f"{tag}.gb")
    Bg = saturate(rshift_round(Bm * gB, GB_FMT.frac), f["xproj"], sat, f"{tag}.bgated")

    xf, hf, yf = f["xproj"].frac, f["h"].frac, f["y"].frac
    dbx = (rshift_round(delta[..., :, None] * Bg[..., None, :], dfmt.frac + xf - f["dbx"].frac)
           + requant(eps, REG_FMT.frac, Fmt(40, f["dbx"].frac))[..., None, None])
    dbx = saturate(dbx, f["dbx"], sat, f"{tag}.dbx")                  # (B, T, E, N)
    inc = rshift_round(dbx * xc[..., None], f["dbx"].frac + f["xc"].frac - hf)
    ya = -rshift_round(p.A * delta[..., None], p.a_frac + dfmt.frac - LOG_FRAC)
    dA = EXP2(ya, DA_FMT, sat, f"{tag}.dA")             # (B, T, E, N)

    skip = rshift_round(p.D * xc, D_FMT.frac + f["xc"].frac - yf)
    h = np.zeros(x.shape[:1] + (E, N), dtype=I64)
    y = np.empty(xc.shape, dtype=I64)
    for t in range(x.shape[1]):
        h = saturate(rshift_round(dA[:, t] * h, DA_FMT.frac) + inc[:, t], f["h"], sat, f"{tag}.h")
        hc = (h * Cm[:, t, None, :]).sum(axis=-1)
        y[:, t] = rshift_round(hc, hf + xf - yf) + skip[:, t]
    y = saturate(y, f["y"], sat, f"{tag}.y")
    sz = tables["silu_z"](z, sat)
    yz = saturate(rshift_round(y * sz, yf + f["siluz"].frac - f["yz"].frac), f["yz"], sat,
                  f"{tag}.yz")
    out = saturate(p.out_proj(yz, sat) + x, f["resid"], sat, f"{tag}.resid")
    if trace is not None:
        trace.update({f"{tag}.{k}": v for k, v in dict(
            ln=u, xb=xb, z=z, conv=c, xc=xc, dt_raw=dt_raw, B=Bm, C=Cm, q=q, floor=floor,
            eps=eps, dt_pre=v, delta=delta, B_gated=Bg, dbx=dbx, dA=dA, y=y, silu_z=sz, yz=yz,
            out=out).items()})
    return out
