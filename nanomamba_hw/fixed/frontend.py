"""Front ends in integers: log-mel (Tiny/Small) and frequency floor + DualPCEN v1.

Both work in the log2 domain of the shared units (``funcs.LOG2``/``funcs.EXP2``, LOG_FRAC = 16
fractional bits). Features leave in ``FEAT_FMTS[kind]``.

**log-mel**: ``ln(mel + 1e-8)`` = ln2 · log2((mel << 14) + 11) with frac 30 — 11 is 1e-8 at
2**-30, so digital silence gives ln(1e-8) as in the float model.

**DualPCEN** (per band m, frame t; E = max(mel, floor_m), u28.16):

- smoother M (u32.20): M_0 = E_0, ``M += round(s · (E − M) / 2**16)``;
- ``lg = log2 E − round(α · log2(M + 1e-6) / 2**16)``, ``v = exp2(lg) + δ`` (u40.16);
- ``out = exp2(round(r · log2 v / 2**16)) − δ^r`` (s20.14), δ^r computed by the same units;
- routing: ``log2 SF = mean_m log2 E − log2 mean_m E`` (≤ 0), SF = exp2 (u16.15); with tilt,
  ``tilt = 14·low / (14·low + 13·high)`` (low: bands 0–12, high: 26–39);
  ``SF' = SF + (1 − SF) · relu(tilt − 0.6)``; ``g = σ(gate_temp · (SF' − 0.5))`` (u16.15);
- ``F = nonstat + round(g · (stat − nonstat) / 2**15)``.

The float model's +1e-8 inside SF and tilt is below resolution here because E ≥ 0.0025.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .funcs import EXP2, LOG2, LOG_FRAC, PWLTable, divide, sigmoid_f
from .mel import MEL_FMT
from .ops import I64, Fmt, SatCounter, rshift_round, saturate

# Front-end output (instance-norm input): DualPCEN features are ≥ 0 and small (observed ≤ 1.4,
# bounded near 60 by v^r), log-mel spans ln(1e-8) = −18.4 … ln(4096) = 8.3.
FEAT_FMTS = {"dualpcen": Fmt(16, 11), "logmel": Fmt(16, 10)}
LOGMEL_SHIFT = 14                         # mel (frac 16) << 14 → frac 30
LOGMEL_EPS = int(np.floor(1e-8 * 2 ** (MEL_FMT.frac + LOGMEL_SHIFT) + 0.5))
LN2_FMT = Fmt(17, 16, signed=False)
LN2 = int(LN2_FMT.quantize(np.log(2.0)))

PCEN_COEF_FMT = Fmt(17, 16, signed=False)  # s, α, r in [0, 1)
DELTA_FMT = Fmt(20, 16, signed=False)      # δ ∈ [0.001, 5]
M_FMT = Fmt(32, 20, signed=False)          # smoother state
M_EPS = max(1, int(np.floor(1e-6 * 2 ** M_FMT.frac + 0.5)))
GAIN_FMT = Fmt(40, 16, signed=False)       # E·(ε+M)^−α + δ
POW_FMT = Fmt(22, 14, signed=False)        # v^r ≤ (2**24)**0.25 = 64
PCEN_FMT = Fmt(20, 14)                     # expert output
SF_FMT = Fmt(16, 15, signed=False)         # SF, tilt, SF', gate g: [0, 1]
ONE_SF = 1 << SF_FMT.frac
TILT_RAW_FMT = Fmt(17, 15, signed=False)   # log-domain quotient may exceed 1 by rounding
TILT_THRESHOLD = int(SF_FMT.quantize(0.6))
GATE_TEMP_FMT = Fmt(16, 10)
GATE_ARG_FMT = Fmt(16, 11)
LOW_BANDS_DIV = 3                          # low = bands [0, n//3), high = [2n//3, n)
MEAN_FRAC = 22                             # Σ/n via one multiply by round(2**22 / n)

GATE_TABLE = PWLTable.build("gate_sigmoid", sigmoid_f, GATE_ARG_FMT, SF_FMT, -16.0, 16.0, 9)


@dataclass(frozen=True)
class PCENParams:
    """One expert's per-band constants (clamped float values, quantized)."""

    s: np.ndarray
    alpha: np.ndarray
    delta: np.ndarray
    r: np.ndarray
    delta_r: np.ndarray     # δ^r in PCEN_FMT, computed with the integer units

    @classmethod
    def from_float(cls, s, alpha, delta, r) -> "PCENParams":
        sq, aq = PCEN_COEF_FMT.quantize(s), PCEN_COEF_FMT.quantize(alpha)
        dq, rq = DELTA_FMT.quantize(delta), PCEN_COEF_FMT.quantize(r)
        dr = EXP2(rshift_round(rq * LOG2(dq, DELTA_FMT.frac), PCEN_COEF_FMT.frac), PCEN_FMT)
        return cls(sq, aq, dq, rq, dr)

    def to_dict(self) -> dict:
        return {k: [int(v) for v in getattr(self, k)] for k in ("s", "alpha", "delta", "r", "delta_r")}

    @classmethod
    def from_dict(cls, d: dict) -> "PCENParams":
        return cls(**{k: np.asarray(v, dtype=I64) for k, v in d.items()})


@dataclass(frozen=True)
class FrontendParams:
    """Quantized constants of the front end (after the mel filterbank)."""

    kind: str                       # "logmel" or "dualpcen"
    routing: str = "sf"
    floor: np.ndarray | None = None         # per-band floor in MEL_FMT
    stat: PCENParams | None = None
    nonstat: PCENParams | None = None
    gate_temp: int = 0

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "routing": self.routing, "gate_temp": self.gate_temp}
        if self.kind == "dualpcen":
            d.update(floor=[int(v) for v in self.floor], stat=self.stat.to_dict(),
                     nonstat=self.nonstat.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FrontendParams":
        if d["kind"] == "logmel":
            return cls("logmel")
        return cls("dualpcen", d["routing"], np.asarray(d["floor"], dtype=I64),
                   PCENParams.from_dict(d["stat"]), PCENParams.from_dict(d["nonstat"]),
                   int(d["gate_temp"]))


def log_mel(mel: np.ndarray, sat: SatCounter | None = None) -> np.ndarray:
    """ln(mel + 1e-8) in ``FEAT_FMTS["logmel"]``."""
    l2 = LOG2((np.asarray(mel, dtype=I64) << I64(LOGMEL_SHIFT)) + LOGMEL_EPS,
              MEL_FMT.frac + LOGMEL_SHIFT)
    fmt = FEAT_FMTS["logmel"]
    return saturate(rshift_round(l2 * LN2, LOG_FRAC + LN2_FMT.frac - fmt.frac), fmt, sat, "logmel")


def _smooth(p: PCENParams, E: np.ndarray) -> np.ndarray:
    up = M_FMT.frac - MEL_FMT.frac
    E4 = E << I64(up)
    M = np.empty_like(E4)
    M[..., 0] = E4[..., 0]
    s = p.s                                  # per band, broadcast over the batch
    for t in range(1, E.shape[-1]):
        M[..., t] = M[..., t - 1] + rshift_round(s * (E4[..., t] - M[..., t - 1]),
                                                 PCEN_COEF_FMT.frac)
    return M


def pcen(p: PCENParams, E: np.ndarray, logE: np.ndarray, sat: SatCounter | None = None,
         stage: str = "pcen") -> np.ndarray:
    """One PCEN expert on floored mel E (B, 40, T) with log2 E precomputed."""
    M = _smooth(p, E)
    bands = (slice(None), None)             # per-band constants broadcast over (B, 40, T)
    alpha, delta, r, dr = (v[bands] for v in (p.alpha, p.delta, p.r, p.delta_r))
    lg = logE - rshift_round(alpha * LOG2(M + M_EPS, M_FMT.frac), PCEN_COEF_FMT.frac)
    v = EXP2(lg, GAIN_FMT, sat, stage + "_gain") + delta
    v = saturate(v, GAIN_FMT, sat, stage + "_gain")
    pw = EXP2(rshift_round(r * LOG2(v, GAIN_FMT.frac), PCEN_COEF_FMT.frac), POW_FMT)
    return saturate(pw - dr, PCEN_FMT, sat, stage)


def mean_recip(n: int) -> int:
    """Σ/n as one multiply: round(2**MEAN_FRAC / n), then rshift_round(·, MEAN_FRAC)."""
    return int(round(2 ** MEAN_FRAC / n))


def log2_const(n: int) -> int:
    """round(log2(n) · 2**LOG_FRAC): log2 of the band count, to turn log2 Σ into log2 mean."""
    return int(round(np.log2(n) * 2 ** LOG_FRAC))


def routing_gate(p: FrontendParams, E: np.ndarray, logE: np.ndarray) -> np.ndarray:
    """Per-frame gate g (B, T) in SF_FMT."""
    n = E.shape[-2]
    mean_log = rshift_round(logE.sum(axis=-2) * mean_recip(n), MEAN_FRAC)
    log_mean = LOG2(E.sum(axis=-2), MEL_FMT.frac) - log2_const(n)
    lsf = np.minimum(mean_log - log_mean, 0)              # SF ≤ 1 (clamp as in the float model)
    sf = np.minimum(EXP2(lsf, SF_FMT), ONE_SF)
    if p.routing == "sf+tilt":
        low = E[..., : n // LOW_BANDS_DIV, :].sum(axis=-2)
        high = E[..., 2 * n // LOW_BANDS_DIV:, :].sum(axis=-2)
        n_low, n_high = n // LOW_BANDS_DIV, n - 2 * n // LOW_BANDS_DIV
        num = low * n_high
        tilt = np.minimum(divide(num, 0, num + high * n_low, 0, TILT_RAW_FMT), ONE_SF)
        sf = sf + rshift_round((ONE_SF - sf) * np.maximum(tilt - TILT_THRESHOLD, 0), SF_FMT.frac)
    arg = rshift_round(I64(p.gate_temp) * (sf - ONE_SF // 2),
                       GATE_TEMP_FMT.frac + SF_FMT.frac - GATE_ARG_FMT.frac)
    return GATE_TABLE(saturate(arg, GATE_ARG_FMT))


def dual_pcen(p: FrontendParams, mel: np.ndarray, sat: SatCounter | None = None,
              trace: dict | None = None) -> np.ndarray:
    """Floored mel → DualPCEN features in ``FEAT_FMTS["dualpcen"]``."""
    E = np.maximum(np.asarray(mel, dtype=I64), p.floor[:, None])
    logE = LOG2(E, MEL_FMT.frac)
    stat = pcen(p.stat, E, logE, sat, "pcen_stat")
    nonstat = pcen(p.nonstat, E, logE, sat, "pcen_nonstat")
    g = routing_gate(p, E, logE)
    mix = nonstat + rshift_round(g[..., None, :] * (stat - nonstat), SF_FMT.frac)
    if trace is not None:
        trace.update(mel_floored=E, pcen_stat=stat, pcen_nonstat=nonstat, gate=g)
    fmt = FEAT_FMTS["dualpcen"]
    return saturate(rshift_round(mix, PCEN_FMT.frac - fmt.frac), fmt, sat, "frontend")


def features(p: FrontendParams, mel: np.ndarray, sat: SatCounter | None = None,
             trace: dict | None = None) -> np.ndarray:
    """The front end's output for either kind, (B, 40, T) in ``FEAT_FMTS[p.kind]``."""
    if p.kind == "logmel":
        return log_mel(mel, sat)
    return dual_pcen(p, mel, sat, trace)
