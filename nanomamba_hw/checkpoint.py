"""Checkpoints: our own format, and import of the published NanoMamba checkpoints.

Our format is a plain dict loadable with ``torch.load(weights_only=True)`` (no arbitrary
unpickling)::

    {"format": "nanomamba_hw.checkpoint", "format_version": 1,
     "config": ModelConfig.to_dict(), "class_names": [...], "state_dict": {name: tensor},
     "provenance": {...}, "metrics": {...}}

The state dict holds only learned parameters; fixed buffers (mel filterbank, frequency floor,
SSM constants) follow from the config.

Published checkpoints are dicts ``{model_state_dict, epoch, val_acc, model_name}`` from
different revisions of the original code. They are recognised by their keys
(``../shared/seed/README.md``):

- ``published-logmel-static``: no DualPCEN, no EMA parameters, no SSM constants stored
  (NanoMamba-Tiny, -Small) → log-mel, static SNR, default SSM constants;
- ``published-dualpcen-scalar-ssm``: DualPCEN + EMA SNR with scalar ``sa_ssm.delta_floor`` and
  ``sa_ssm.epsilon`` (NanoMamba-Tiny-DualPCEN) → SF-only routing, constant Δ floor and ε
  (min = max), no B-gate floor;
- ``published-ssm-buffers``: a later revision that stores the five SSM buffers
  (``delta_floor_min/max``, ``epsilon_min/max``, ``bgate_floor``) → those values, SF+tilt routing.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import CLASS_NAMES, ModelConfig, SSMConstants
from .errors import (CheckpointError, CheckpointNotFoundError, CorruptCheckpointError,
                     NonFiniteWeightError, ShapeMismatchError, UnknownLayoutError)
from .reference.frontend import frequency_floor, mel_filterbank
from .reference.model import NanoMamba

FORMAT = "nanomamba_hw.checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, CPU) and what is known about it."""

    model: NanoMamba
    config: ModelConfig
    class_names: tuple[str, ...]
    layout: str
    path: str = ""
    provenance: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read(path: str | Path) -> tuple[Path, object]:
    p = Path(path)
    if not p.exists():
        raise CheckpointNotFoundError(f"{p}: checkpoint not found")
    if p.is_dir():
        raise CheckpointNotFoundError(f"{p}: is a directory, not a checkpoint file")
    if not zipfile.is_zipfile(p):
        raise CorruptCheckpointError(
            f"{p}: not a PyTorch checkpoint (expected a zip archive written by torch.save)")
    try:
        obj = torch.load(p, weights_only=True, map_location="cpu")
    except Exception as e:  # truncated zip, bad pickle, disallowed global …
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptCheckpointError(f"{p}: cannot be read as a checkpoint ({msg})") from None
    return p, obj


def _layout_of(obj) -> str:
    if not isinstance(obj, dict):
        raise UnknownLayoutError(f"expected a dict at the top level, found {type(obj).__name__}")
    if obj.get("format") == FORMAT:
        return "nanomamba_hw"
    sd = obj.get("model_state_dict")
    if not isinstance(sd, dict) or "patch_proj.weight" not in sd:
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise UnknownLayoutError(
            f"neither a nanomamba_hw checkpoint nor a published NanoMamba one "
            f"(top-level keys: {keys})")
    if any(k.endswith("sa_ssm.delta_floor_min") for k in sd):
        return "published-ssm-buffers"
    if any(k.endswith("sa_ssm.delta_floor") for k in sd):
        return "published-dualpcen-scalar-ssm"
    if any(k.startswith("dual_pcen.") for k in sd):
        raise UnknownLayoutError("DualPCEN checkpoint without SSM constants: revision unknown")
    return "published-logmel-static"


def _scalar(sd: dict, suffix: str, layout: str) -> float:
    vals = {float(v) for k, v in sd.items() if k.endswith(suffix)}
    if len(vals) != 1:
        raise UnknownLayoutError(
            f"{layout}: '{suffix}' differs between blocks ({sorted(vals)}); "
            "per-block SSM constants are not supported")
    return vals.pop()


def _shape(sd: dict, key: str) -> tuple[int, ...]:
    if key not in sd:
        raise UnknownLayoutError(f"missing tensor '{key}'")
    return tuple(sd[key].shape)


def _config_from_published(sd: dict, layout: str, model_name: str) -> ModelConfig:
    d_model, n_mels = _shape(sd, "patch_proj.weight")
    n_layers = len({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    d_inner, _, d_conv = _shape(sd, "blocks.0.conv1d.weight")
    d_state = _shape(sd, "blocks.0.sa_ssm.A_log")[1]
    n_classes = _shape(sd, "classifier.weight")[0]
    if n_classes != len(CLASS_NAMES):
        raise ShapeMismatchError(f"classifier.weight: {n_classes} classes, expected "
                                 f"{len(CLASS_NAMES)} (published class order)")
    expand = d_inner / d_model
    if int(1.5 * d_model) == d_inner:
        expand = 1.5
    if layout == "published-logmel-static":
        kw = dict(frontend="logmel", snr_mode="static", ssm=SSMConstants())
    elif layout == "published-dualpcen-scalar-ssm":
        df = _scalar(sd, "sa_ssm.delta_floor", layout)
        eps = _scalar(sd, "sa_ssm.epsilon", layout)
        kw = dict(frontend="dualpcen", snr_mode="ema", routing="sf",
                  ssm=SSMConstants(df, df, eps, eps, 0.0))
    else:
        kw = dict(frontend="dualpcen" if any(k.startswith("dual_pcen.") for k in sd) else "logmel",
                  snr_mode="ema" if "snr_estimator.raw_beta" in sd else "static",
                  routing="sf+tilt",
                  ssm=SSMConstants(*(_scalar(sd, f"sa_ssm.{n}", layout) for n in (
                      "delta_floor_min", "delta_floor_max", "epsilon_min", "epsilon_max",
                      "bgate_floor"))))
    return ModelConfig(name=str(model_name or "NanoMamba"), d_model=d_model, d_state=d_state,
                       expand=expand, d_conv=d_conv, n_layers=n_layers, n_mels=n_mels, **kw)


# Published keys that are buffers of ours (recomputed) or constants folded into the config.
_PUBLISHED_BUFFER = re.compile(
    r"^(mel_fb|freq_dep_floor\.freq_floor|blocks\.\d+\.sa_ssm\."
    r"(delta_floor|epsilon|delta_floor_min|delta_floor_max|epsilon_min|epsilon_max|bgate_floor))$")


def _check_buffers(sd: dict, config: ModelConfig) -> None:
    """Stored filterbank and floor must be the ones our formulas give, or the model differs."""
    expected = {"mel_fb": mel_filterbank(config.n_mels, config.n_fft, config.sample_rate),
                "freq_dep_floor.freq_floor": frequency_floor(config.n_mels)}
    for key, ref in expected.items():
        if key not in sd:
            continue
        t = sd[key].detach().float().reshape(-1)
        ref_t = torch.from_numpy(ref).reshape(-1)
        if t.numel() != ref_t.numel():
            raise ShapeMismatchError(f"{key}: shape {tuple(sd[key].shape)}, expected "
                                     f"{tuple(ref.shape)}")
        if not torch.allclose(t, ref_t, rtol=0, atol=1e-6):
            raise UnknownLayoutError(f"{key} differs from the HTK filterbank/floor this model "
                                     "defines; the checkpoint comes from a different front end")


def _load_state(config: ModelConfig, sd: dict) -> NanoMamba:
    """Build the model and load ``sd`` strictly, with our errors for every mismatch."""
    model = NanoMamba(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}" + (" …" if len(missing) > 6 else ""))
        if extra:
            parts.append(f"unexpected {', '.join(extra[:6])}" + (" …" if len(extra) > 6 else ""))
        raise UnknownLayoutError(f"state dict does not match {config.name}: " + "; ".join(parts))
    for key, ref in expected.items():
        t = sd[key]
        if not isinstance(t, torch.Tensor):
            raise UnknownLayoutError(f"{key}: expected a tensor, found {type(t).__name__}")
        if tuple(t.shape) != tuple(ref.shape):
            raise ShapeMismatchError(f"{key}: checkpoint has shape {tuple(t.shape)}, "
                                     f"the model needs {tuple(ref.shape)}")
        if not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise NonFiniteWeightError(f"{key}: {bad} NaN/Inf value(s)")
    model.load_state_dict({k: sd[k].detach().float() for k in expected}, strict=True)
    model.eval()
    return model


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load our format or a published NanoMamba checkpoint.

    Raises a :class:`~nanomamba_hw.errors.CheckpointError` subclass naming the file and the
    problem: not found, corrupt, unknown layout, a tensor of the wrong shape, NaN/Inf.
    """
    p, obj = _read(path)
    try:
        layout = _layout_of(obj)
        if layout == "nanomamba_hw":
            return _load_ours(p, obj)
        sd = obj["model_state_dict"]
        config = _config_from_published(sd, layout, obj.get("model_name", ""))
        for k, v in sd.items():
            if isinstance(v, torch.Tensor) and not torch.isfinite(v).all():
                raise NonFiniteWeightError(f"{k}: NaN/Inf value(s)")
        _check_buffers(sd, config)
        learned = {k: v for k, v in sd.items() if not _PUBLISHED_BUFFER.match(k)}
        model = _load_state(config, learned)
    except CheckpointError as e:
        raise type(e)(f"{p}: {e}") from None
    prov = {"source": str(p), "sha256": _sha256(p), "layout": layout,
            "model_name": obj.get("model_name"), "epoch": obj.get("epoch")}
    metrics = {}
    if obj.get("val_acc") is not None:
        metrics["val_acc_gsc_v2_published"] = float(obj["val_acc"])
    return Checkpoint(model=model, config=config, class_names=tuple(CLASS_NAMES), layout=layout,
                      path=str(p), provenance=prov, metrics=metrics)


def _load_ours(p: Path, obj: dict) -> Checkpoint:
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise UnknownLayoutError(f"format version {version!r} is not supported "
                                 f"(this toolkit reads version {FORMAT_VERSION})")
    for key in ("config", "state_dict"):
        if not isinstance(obj.get(key), dict):
            raise UnknownLayoutError(f"'{key}' missing or not a dict")
    try:
        config = ModelConfig.from_dict(obj["config"])
    except (TypeError, ValueError) as e:
        raise UnknownLayoutError(f"invalid model config: {e}") from None
    model = _load_state(config, obj["state_dict"])
    return Checkpoint(model=model, config=config, class_names=tuple(config.class_names),
                      layout="nanomamba_hw", path=str(p),
                      provenance=dict(obj.get("provenance") or {}),
                      metrics=dict(obj.get("metrics") or {}))


def save_checkpoint(path: str | Path, model: NanoMamba, *, provenance: dict | None = None,
                    metrics: dict | None = None) -> None:
    """Write ``model`` in our format (learned parameters + config + provenance + metrics)."""
    obj = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "class_names": list(model.config.class_names),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "provenance": dict(provenance or {}),
        "metrics": dict(metrics or {}),
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(p)  # never leave a half-written checkpoint under the real name


def describe(ck: Checkpoint) -> str:
    """A human-readable summary of a checkpoint."""
    c = ck.config
    lines = [
        f"checkpoint  {ck.path}",
        f"layout      {ck.layout}",
        f"model       {c.name}: {c.frontend} front end, {c.snr_mode} SNR"
        + (f", routing {c.routing}" if c.frontend == "dualpcen" else ""),
        f"shape       d_model {c.d_model}, d_state {c.d_state}, d_inner {c.d_inner}, "
        f"{c.n_layers} layers, {ck.model.num_parameters():,} parameters",
        "ssm consts  Δfloor [{:g}, {:g}], ε [{:g}, {:g}], B-gate floor {:g}".format(*c.ssm.as_tuple()),
        f"classes     {', '.join(ck.class_names)}",
    ]
    for k, v in ck.metrics.items():
        lines.append(f"metric      {k} = {v:.4g}" if isinstance(v, float) and math.isfinite(v)
                     else f"metric      {k} = {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m nanomamba_hw.checkpoint",
        description="Inspect a checkpoint, or convert a published one to the nanomamba_hw format.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("info", help="print what a checkpoint holds")
    a.add_argument("ckpt")
    b = sub.add_parser("convert", help="write a checkpoint in the nanomamba_hw format")
    b.add_argument("src")
    b.add_argument("dst")
    args = ap.parse_args(argv)
    try:
        ck = load_checkpoint(args.ckpt if args.cmd == "info" else args.src)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "info":
        print(describe(ck))
    else:
        save_checkpoint(args.dst, ck.model, provenance={**ck.provenance, "converted_from": ck.path},
                        metrics=ck.metrics)
        print(f"wrote {args.dst} ({ck.config.name}, layout {ck.layout})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
