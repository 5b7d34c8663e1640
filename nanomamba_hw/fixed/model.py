"""The whole accelerator as integer arithmetic: the golden model the hardware must match.

:class:`FixedParams` is the quantized artefact (formats + every integer constant), built from a
checkpoint by :func:`quantize` and saved as JSON; :func:`run` executes it on int16 PCM,
stage by stage with the hardware's boundaries, batched over clips::

    pcm ─ framer ─ window+FFT ─ |X| ─┬─ mel ─ front end ─ feature buffer (+ Σx, Σx²) ─┐
                                     └─ SNR estimator ──────────────────────────────┐ │
      ┌── normalize ◄─────────────────────────────────────────────────────────────┘─┘
      └─ patch projection ─ block × N ─ final LayerNorm ─ Σ over frames ─ classifier ─ argmax
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..errors import NanoMambaError
from . import frontend as fe
from . import mel as melm
from . import snr as snrm
from . import stft
from .block import (BlockParams, SSMRegisters, activation_tables, block_from_float, run_block)
from .formats import Formats
from .linear import QLinear
from .norm import IN_EPS, LayerNormParams, layer_norm, normalize
from .ops import I64, Fmt, SatCounter

ARTEFACT_FORMAT = "nanomamba_hw.fixed"
ARTEFACT_VERSION = 1

# Stages whose saturation is part of the design (a clamp the float model also has, or that
# cannot change the result): reports list them apart from unexpected overflow.
DESIGNED_CLAMPS = {
    "snr_ratio": "ratio above 2048: that band's tanh is 1 within 2**-15 either way",
    "snr_mel": "projected ratio above 256: tanh(25.6) = 1 within 2**-15",
}


class FixedModelError(NanoMambaError):
    """A quantized artefact that cannot be read or does not fit the model."""


@dataclass
class FixedParams:
    """Everything the fixed-point model (and the hardware generator) needs, as integers."""

    config: ModelConfig
    formats: Formats
    snr: snrm.SNRParams
    frontend: fe.FrontendParams
    patch_proj: QLinear
    blocks: list[BlockParams]
    final_norm: LayerNormParams
    classifier: QLinear
    registers: SSMRegisters
    provenance: dict = field(default_factory=dict)

    @property
    def feat_fmt(self) -> Fmt:
        return fe.FEAT_FMTS[self.frontend.kind]

    def to_dict(self) -> dict:
        return {
            "format": ARTEFACT_FORMAT, "format_version": ARTEFACT_VERSION,
            "config": self.config.to_dict(), "formats": self.formats.to_dict(),
            "snr": self.snr.to_dict(), "frontend": self.frontend.to_dict(),
            "patch_proj": self.patch_proj.to_dict(), "blocks": [b.to_dict() for b in self.blocks],
            "final_norm": self.final_norm.to_dict(), "classifier": self.classifier.to_dict(),
            "registers": list(self.registers.as_tuple()), "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FixedParams":
        if d.get("format") != ARTEFACT_FORMAT or d.get("format_version") != ARTEFACT_VERSION:
            raise FixedModelError("not a nanomamba_hw fixed-point artefact (version "
                                  f"{d.get('format_version')!r})")
        return cls(ModelConfig.from_dict(d["config"]), Formats.from_dict(d["formats"]),
                   snrm.SNRParams.from_dict(d["snr"]), fe.FrontendParams.from_dict(d["frontend"]),
                   QLinear.from_dict(d["patch_proj"]), [BlockParams.from_dict(b) for b in d["blocks"]],
                   LayerNormParams.from_dict(d["final_norm"]), QLinear.from_dict(d["classifier"]),
                   SSMRegisters(*d["registers"]), dict(d.get("provenance", {})))

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(p)            # atomic: concurrent readers never see half a file

    @classmethod
    def load(cls, path: str | Path) -> "FixedParams":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FixedModelError(f"{path}: cannot read fixed-point artefact ({e})") from None


# ----------------------------------------------------------------------------------------------
# Calibration: float ranges of every back-end edge

def observe_ranges(model, audio: np.ndarray, batch: int = 64,
                   moments: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Largest |value| of every calibrated edge when the float model runs on ``audio``.

    When ``moments`` is a dict, it also receives each linear layer's input second moments
    E[x xᵀ] (``patch_proj``, ``block{i}.in_proj`` …, ``classifier``; per channel for the
    depthwise ``block{i}.conv``), which the weight rounding uses.
    """
    obs: dict[str, float] = {}
    sums: dict[str, list] = {}

    def mom(key, x, depthwise=False):
        if moments is None:
            return
        x = x.detach().double()
        if depthwise:                       # x (..., channels, taps)
            x = x.reshape(-1, *x.shape[-2:])
            m = torch.einsum("rki,rkj->kij", x, x)
        else:
            x = x.reshape(-1, x.shape[-1])
            m = x.T @ x
        acc = sums.setdefault(key, [0.0, 0])
        acc[0] = acc[0] + m.numpy()
        acc[1] += x.shape[0]

    def upd(key, t):
        v = float(t.detach().abs().max()) if t.numel() else 0.0
        obs[key] = max(obs.get(key, 0.0), v)

    with torch.no_grad():
        for i in range(0, len(audio), batch):
            st = model.stages(torch.from_numpy(np.asarray(audio[i:i + batch], dtype=np.float32)),
                              probe=True)
            upd("norm", st["instnorm_out"])
            upd("resid", st["patch_proj"])
            upd("fn", st["final_norm"])
            upd("logits", st["logits"])
            mom("patch_proj", st["instnorm_out"].transpose(1, 2))
            mom("classifier", st["pooled"])
            for b in range(model.config.n_layers):
                p = lambda k: st[f"block{b}.{k}"]  # noqa: E731
                mom(f"block{b}.in_proj", p("ln"))
                mom(f"block{b}.x_proj", p("xc"))
                mom(f"block{b}.snr_proj", st["snr_mel"].transpose(1, 2))
                mom(f"block{b}.out_proj", p("yz"))
                k = model.blocks[b].conv1d.kernel_size[0]
                xb = torch.nn.functional.pad(p("xb"), (0, 0, k - 1, 0))   # zeros before t = 0
                hist = torch.stack([xb[:, j:j + p("xb").shape[1]] for j in range(k)], dim=-1)
                mom(f"block{b}.conv", hist, depthwise=True)
                upd("resid", st[f"block{b}_out"])
                upd("ln", p("ln"))
                upd("inproj", p("xb"))
                upd("inproj", p("z"))
                upd("conv", p("conv"))
                upd("xc", p("xc"))
                for k in ("dt_raw", "B", "C", "B_gated"):
                    upd("xproj", p(k))
                upd("q", p("q"))
                upd("dtin", p("dt_raw") + p("q")[..., :1])
                upd("dtpre", p("dt_pre"))
                upd("delta", p("delta"))
                upd("dbx", p("delta")[..., :, None] * p("B_gated")[..., None, :] + p("eps")[..., None])
                upd("h", p("h_absmax"))
                upd("y", p("y"))
                upd("siluz", p("silu_z"))
                upd("yz", p("yz"))
    if moments is not None:
        moments.update({k: v[0] / max(v[1], 1) for k, v in sums.items()})
    return obs


def quantize(ckpt, calib_audio: np.ndarray, *, weight_bits: int = 8,
             calib_info: dict | None = None) -> FixedParams:
    """Build the integer artefact of a loaded checkpoint from calibration clips (float audio)."""
    if weight_bits not in (8, 16):
        raise ValueError("weight_bits must be 8 or 16")
    model, cfg = ckpt.model, ckpt.config
    moments: dict[str, np.ndarray] = {}
    f = Formats.calibrate(observe_ranges(model, calib_audio, moments=moments), weight_bits,
                          {"clips": int(len(calib_audio)), **(calib_info or {})})
    npf = lambda t: t.detach().double().numpy()  # noqa: E731
    se = model.snr_estimator
    snr_p = snrm.SNRParams.from_float(
        cfg.snr_mode, float(se.noise_scale.detach()),
        float(se.raw_beta.detach()) if cfg.snr_mode == "ema" else None,
        float(se.raw_gamma.detach()) if cfg.snr_mode == "ema" else None)
    if cfg.frontend == "dualpcen":
        dp = model.dual_pcen

        def expert(m):
            c = m.constants()
            return fe.PCENParams.from_float(*(npf(c[k]) for k in ("s", "alpha", "delta", "r")))

        fe_p = fe.FrontendParams("dualpcen", cfg.routing, melm.MEL_FMT.quantize(npf(model.freq_floor)),
                                 expert(dp.pcen_stat), expert(dp.pcen_nonstat),
                                 int(fe.GATE_TEMP_FMT.quantize(float(dp.gate_temp.detach()))))
    else:
        fe_p = fe.FrontendParams("logmel")
    T = cfg.n_frames
    # The pool sums T frames; the classifier's multiplier folds in the 1/T of the mean.
    pool_fmt = Fmt(f["fn"].bits + int(np.ceil(np.log2(T))), f["fn"].frac)
    return FixedParams(
        config=cfg, formats=f, snr=snr_p, frontend=fe_p,
        patch_proj=QLinear.from_float("patch_proj", npf(model.patch_proj.weight),
                                      npf(model.patch_proj.bias), f["norm"], f["resid"], weight_bits,
                                      moments=moments.get("patch_proj")),
        blocks=[block_from_float(b, f, {k.split(".", 1)[1]: v for k, v in moments.items()
                                        if k.startswith(f"block{i}.")})
                for i, b in enumerate(model.blocks)],
        final_norm=LayerNormParams.from_float(npf(model.final_norm.weight),
                                              npf(model.final_norm.bias), f["fn"]),
        classifier=QLinear.from_float("classifier", npf(model.classifier.weight),
                                      npf(model.classifier.bias), pool_fmt, f["logits"],
                                      weight_bits, extra_scale=1.0 / T,
                                      moments=moments.get("classifier")),
        registers=SSMRegisters.from_constants(cfg.ssm),
        provenance={"checkpoint": ckpt.path, "checkpoint_layout": ckpt.layout,
                    **{k: v for k, v in ckpt.provenance.items() if k in ("sha256", "model_name")}},
    )


# ----------------------------------------------------------------------------------------------
# Execution

@dataclass
class FixedResult:
    """Output of :func:`run`: logits (ints, logits format), class indices, saturation counts
    and, when traced, every stage's integers."""

    logits: np.ndarray
    index: np.ndarray
    logit_fmt: Fmt
    saturations: SatCounter
    stages: dict[str, np.ndarray]

    @property
    def logits_float(self) -> np.ndarray:
        return self.logit_fmt.to_float(self.logits)


def run(p: FixedParams, pcm: np.ndarray, *, trace: bool = False,
        registers: SSMRegisters | None = None) -> FixedResult:
    """Run the integer model on (B, 16000) int16 PCM (or one clip)."""
    pcm = np.asarray(pcm)
    if pcm.ndim == 1:
        pcm = pcm[None]
    if pcm.dtype != np.int16:
        raise TypeError(f"fixed model input must be int16 PCM, got {pcm.dtype}")
    regs = registers or p.registers
    f = p.formats
    sat = SatCounter()
    st: dict[str, np.ndarray] = {}
    mag = stft.stft_magnitude(pcm)                                  # (B, 257, T)
    fb = melm.SparseFilterbank.build(p.config.n_mels, p.config.n_fft, p.config.sample_rate)
    snr = snrm.snr_bands(p.snr, fb, mag, sat)                        # (B, 40, T)
    mel = melm.mel_spectrum(fb, mag, sat)
    feat = fe.features(p.frontend, mel, sat, st if trace else None)  # (B, 40, T)
    normed = normalize(feat, p.feat_fmt.frac, -1, f["norm"], IN_EPS, sat, "instnorm")
    x = p.patch_proj(np.swapaxes(normed, 1, 2), sat)                # (B, T, d)
    snr_t = np.swapaxes(snr, 1, 2)
    tables = activation_tables(f)
    if trace:
        st.update(stft_mag=mag, snr_mel=snr, mel=mel, instnorm_in=feat, instnorm_out=normed,
                  patch_proj=x)
    for i, bp in enumerate(p.blocks):
        x = run_block(bp, f, tables, regs, x, snr_t, sat, st if trace else None, f"block{i}")
        if trace:
            st[f"block{i}_out"] = x
    fn = layer_norm(p.final_norm, x, f["resid"].frac, sat, "final_norm")
    pooled = fn.sum(axis=1)                                          # Σ over frames
    logits = p.classifier(pooled, sat)
    if trace:
        st.update(final_norm=fn, pooled=pooled, logits=logits)
    return FixedResult(logits, np.argmax(logits, axis=-1), f["logits"], sat, st)


def stage_scales(p: FixedParams) -> dict[str, float]:
    """2**-frac of every traced stage, to turn its integers into the float model's units."""
    f = p.formats
    s = {"stft_mag": stft.MAG_FMT.lsb, "snr_mel": snrm.SNR_FMT.lsb, "mel": melm.MEL_FMT.lsb,
         "mel_floored": melm.MEL_FMT.lsb, "pcen_stat": fe.PCEN_FMT.lsb,
         "pcen_nonstat": fe.PCEN_FMT.lsb, "gate": fe.SF_FMT.lsb, "instnorm_in": p.feat_fmt.lsb,
         "instnorm_out": f["norm"].lsb, "patch_proj": f["resid"].lsb, "final_norm": f["fn"].lsb,
         "pooled": f["fn"].lsb / p.config.n_frames, "logits": f["logits"].lsb}
    for i in range(len(p.blocks)):
        s[f"block{i}_out"] = f["resid"].lsb
    return s


def as_int(x) -> np.ndarray:
    return np.asarray(x, dtype=I64)
