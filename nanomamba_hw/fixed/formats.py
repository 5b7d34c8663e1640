"""The formats table: width and binary point of every stage edge — the single source of truth
read by the fixed-point model and by the hardware generator.

Front-end edges have analytic formats (their ranges follow from int16 input and the model's
constants) and are listed with their module's constants. Back-end activation formats are
chosen by range analysis: the float model runs over a calibration set, each edge's largest
|value| is multiplied by its stated headroom, and the format gets just enough integer bits for
that (``frac = bits − 1 − int_bits``). The observed ranges, the headroom and the resulting
formats are stored in the quantized artefact, so a run is reproducible from the artefact alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import frontend, mel, snr, stft
from .ops import Fmt


@dataclass(frozen=True)
class EdgeSpec:
    """A calibrated edge: its width, headroom factor and what it carries."""

    bits: int
    headroom: float
    what: str


# Back-end edges (shared by every layer: one datapath serves all blocks).
EDGES: dict[str, EdgeSpec] = {
    "norm":   EdgeSpec(16, 2, "instance-norm output (patch projection input)"),
    "resid":  EdgeSpec(24, 16, "residual stream: patch projection and block outputs"),
    "ln":     EdgeSpec(16, 2, "block LayerNorm output"),
    "inproj": EdgeSpec(16, 4, "in_proj outputs xb and z"),
    "conv":   EdgeSpec(16, 4, "depthwise conv output"),
    "xc":     EdgeSpec(16, 4, "SiLU(conv)"),
    "xproj":  EdgeSpec(18, 4, "x_proj outputs dt_raw, B, C and the gated B"),
    "q":      EdgeSpec(16, 4, "snr_proj output (Δ shift, B-gate logits)"),
    "dtin":   EdgeSpec(16, 4, "dt_raw + Δ shift"),
    "dtpre":  EdgeSpec(16, 4, "dt_proj output (softplus input)"),
    "delta":  EdgeSpec(16, 4, "Δ = softplus + floor"),
    "dbx":    EdgeSpec(24, 8, "Δ·B̃ + ε (state input coefficient)"),
    "h":      EdgeSpec(24, 16, "SSM state"),
    "y":      EdgeSpec(24, 16, "SSM output C·h + D·x"),
    "siluz":  EdgeSpec(16, 4, "SiLU(z)"),
    "yz":     EdgeSpec(24, 16, "y · SiLU(z) (out_proj input)"),
    "fn":     EdgeSpec(16, 2, "final LayerNorm output"),
    "logits": EdgeSpec(24, 4, "classifier output"),
}

# Fixed (non-calibrated) formats of the back end.
SNR_FMT = snr.SNR_FMT                 # u16.15, SNR per band into every block
REG_FMT = Fmt(16, 16, signed=False)   # calibration registers: Δ floor min/max, ε min/max, B-gate floor
ALPHA_FMT = Fmt(18, 14)               # B-gate strength a (unconstrained scalar)
GB_FMT = Fmt(20, 14)                  # (1 − a) + a·G
D_FMT = Fmt(16, 11)                   # D skip gain
DA_FMT = Fmt(17, 16, signed=False)    # exp(A·Δ) ∈ (0, 1)
GATE_FMT = Fmt(16, 15, signed=False)  # σ(B-gate logits)


def fmt_for(max_abs: float, spec: EdgeSpec) -> Fmt:
    """The signed format of ``spec.bits`` with enough integer bits for max_abs × headroom."""
    need = max(max_abs * spec.headroom, 2.0 ** -8)
    int_bits = max(0, math.ceil(math.log2(need)))
    frac = spec.bits - 1 - int_bits
    return Fmt(spec.bits, frac)


@dataclass
class Formats:
    """Every edge's format, plus the analysis behind the calibrated ones."""

    edges: dict[str, Fmt]
    observed: dict[str, float] = field(default_factory=dict)
    headroom: dict[str, float] = field(default_factory=dict)
    weight_bits: int = 8
    calib: dict = field(default_factory=dict)       # what the calibration set was

    @classmethod
    def calibrate(cls, observed: dict[str, float], weight_bits: int = 8,
                  calib: dict | None = None) -> "Formats":
        missing = set(EDGES) - set(observed)
        if missing:
            raise ValueError(f"no observed range for edges {sorted(missing)}")
        edges = {k: fmt_for(observed[k], EDGES[k]) for k in EDGES}
        return cls(edges, {k: float(observed[k]) for k in EDGES},
                   {k: EDGES[k].headroom for k in EDGES}, weight_bits, dict(calib or {}))

    def __getitem__(self, name: str) -> Fmt:
        return self.edges[name]

    def table(self) -> list[dict]:
        """Every edge, fixed and calibrated, as rows for reports and the hardware generator."""
        fixed = {
            "pcm": (Fmt(16, 15), "int16 PCM input"),
            "window": (stft.WIN_FMT, "Hann window ROM"),
            "fft_in": (stft.FFT_IN_FMT, "windowed samples"),
            "twiddle": (stft.TWIDDLE_FMT, "FFT twiddle ROM"),
            "fft_out": (stft.FFT_OUT_FMT, f"FFT output (halved at stages {stft.SCALE_STAGES})"),
            "mag": (stft.MAG_FMT, "|X|, exact integer sqrt"),
            "mel_weight": (mel.MEL_W_FMT, "triangle weights (454 nonzero)"),
            "mel": (mel.MEL_FMT, "mel magnitude"),
            "noise": (snr.NOISE_FMT, "SNR noise estimate"),
            "snr_ratio": (snr.RATIO_FMT, "per-bin SNR ratio (clamps at the top)"),
            "snr_mel": (snr.SNR_MEL_FMT, "projected ratio (clamps at the top)"),
            "snr": (snr.SNR_FMT, "tanh(snr_mel / 10)"),
            "pcen_M": (frontend.M_FMT, "PCEN smoother state"),
            "pcen_gain": (frontend.GAIN_FMT, "E·(ε+M)^−α + δ"),
            "pcen_out": (frontend.PCEN_FMT, "PCEN expert output"),
            "sf": (frontend.SF_FMT, "spectral flatness, tilt, routing gate"),
            "feat_dualpcen": (frontend.FEAT_FMTS["dualpcen"], "DualPCEN features"),
            "feat_logmel": (frontend.FEAT_FMTS["logmel"], "log-mel features"),
            "reg": (REG_FMT, "SSM calibration registers"),
            "alpha": (ALPHA_FMT, "B-gate strength"),
            "gb": (GB_FMT, "B-gate factor"),
            "dA": (DA_FMT, "exp(A·Δ)"),
            "D": (D_FMT, "skip gain D"),
        }
        rows = [{"edge": k, "format": str(f), "bits": f.bits, "frac": f.frac,
                 "signed": f.signed, "source": "fixed", "what": w} for k, (f, w) in fixed.items()]
        for k, f in self.edges.items():
            rows.append({"edge": k, "format": str(f), "bits": f.bits, "frac": f.frac,
                         "signed": f.signed, "source": "calibrated",
                         "observed_max": self.observed.get(k), "headroom": self.headroom.get(k),
                         "what": EDGES[k].what if k in EDGES else ""})
        return rows

    def to_dict(self) -> dict:
        return {"edges": {k: f.to_dict() for k, f in self.edges.items()},
                "observed": self.observed, "headroom": self.headroom,
                "weight_bits": self.weight_bits, "calib": self.calib}

    @classmethod
    def from_dict(cls, d: dict) -> "Formats":
        return cls({k: Fmt.from_dict(v) for k, v in d["edges"].items()}, dict(d["observed"]),
                   dict(d["headroom"]), int(d["weight_bits"]), dict(d.get("calib", {})))
