"""``python -m nanomamba_hw.quantize``: build the fixed-point artefact of a checkpoint and report
how far the integer model is from the float one, stage by stage.

    python -m nanomamba_hw.quantize --ckpt CKPT [--calib DIR] [--weights int8|int16]
                                    [--out ARTEFACT.json] [--report OUTDIR] [--eval DIR]

The artefact (formats table + every integer constant) is what the fixed engine runs and what
the hardware generator reads. The report (``report.json`` + ``report.md``) lists, per stage,
its format, the observed range, the saturation count and the SQNR of the fixed model against
the float model, and end to end the top-1 agreement and (where labels are known) accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .audio import pcm_from_float
from .checkpoint import Checkpoint, load_checkpoint
from .errors import NanoMambaError
from .fixed import model as fm

STAGES = ("stft_mag", "mel", "snr_mel", "mel_floored", "pcen_stat", "pcen_nonstat", "gate",
          "instnorm_in", "instnorm_out", "patch_proj")


def cache_dir() -> Path:
    root = os.environ.get("NANOMAMBA_CACHE") or Path.home() / ".cache" / "nanomamba_hw"
    return Path(root) / "fixed"


def artefact_beside(ckpt_path: str | Path, weight_bits: int) -> Path:
    """Where a checkpoint's shipped artefact lives: ``NAME.int8.json`` next to ``NAME.pt``."""
    p = Path(ckpt_path)
    return p.with_name(f"{p.stem}.int{weight_bits}.json")


def _ckpt_hash(ckpt: Checkpoint) -> str:
    h = hashlib.sha256()
    for k, v in sorted(ckpt.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    h.update(json.dumps(ckpt.config.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def params_for(ckpt: Checkpoint, *, weight_bits: int = 8, calib: str | None = None,
               progress: bool = False) -> fm.FixedParams:
    """The fixed-point artefact of a checkpoint.

    A shipped artefact beside the checkpoint is used when it was made from these weights;
    otherwise the checkpoint is quantized on the calibration set (``calib`` directory, or the
    default synthetic set) and the artefact is cached, keyed by the weights' hash.
    """
    key = _ckpt_hash(ckpt)
    if calib is None:
        for cand in (artefact_beside(ckpt.path, weight_bits) if ckpt.path else None,
                     cache_dir() / f"{key}.int{weight_bits}.json"):
            if cand is not None and cand.exists():
                p = fm.FixedParams.load(cand)
                if p.provenance.get("weights_hash") == key:
                    return p
    from .calib import calibration_from_dir, default_calibration
    audio, info = calibration_from_dir(calib) if calib else default_calibration(progress=progress)
    p = fm.quantize(ckpt, audio, weight_bits=weight_bits, calib_info=info)
    p.provenance["weights_hash"] = key
    if calib is None:
        p.save(cache_dir() / f"{key}.int{weight_bits}.json")
    return p


# ----------------------------------------------------------------------------------------------
# Report

def compare(params: fm.FixedParams, ckpt: Checkpoint, audio: np.ndarray,
            labels: np.ndarray | None = None, batch: int = 32) -> dict:
    """Per-stage SQNR, ranges and saturations, and end-to-end agreement of fixed vs float."""
    scales = fm.stage_scales(params)
    sums: dict[str, list[float]] = {}
    ranges: dict[str, float] = {}
    sat_total: dict[str, int] = {}
    f_idx, q_idx, dlog = [], [], []
    for i in range(0, len(audio), batch):
        x = audio[i:i + batch]
        r = fm.run(params, pcm_from_float(x), trace=True)
        with torch.no_grad():
            st = ckpt.model.stages(torch.from_numpy(np.asarray(x, np.float32)))
        for k, n in r.saturations.items():
            sat_total[k] = sat_total.get(k, 0) + int(n)
        for k, s in scales.items():
            if k not in r.stages or k not in st:
                continue
            got = r.stages[k] * s
            ref = st[k].numpy().astype(np.float64)
            e = sums.setdefault(k, [0.0, 0.0])
            e[0] += float(np.sum(ref ** 2))
            e[1] += float(np.sum((got - ref) ** 2))
            ranges[k] = max(ranges.get(k, 0.0), float(np.abs(ref).max()))
        fl = st["logits"].numpy()
        f_idx.append(fl.argmax(-1))
        q_idx.append(r.index)
        dlog.append(np.abs(r.logits_float - fl).mean(axis=-1))
    f_idx, q_idx = np.concatenate(f_idx), np.concatenate(q_idx)
    out = {
        "clips": int(len(audio)),
        "top1_agreement": float(np.mean(f_idx == q_idx)),
        "mean_abs_logit_error": float(np.concatenate(dlog).mean()),
        "stages": {k: {"sqnr_db": (10 * np.log10(v[0] / v[1]) if v[1] > 0 else float("inf")),
                       "float_max_abs": ranges[k]} for k, v in sums.items()},
        "saturations": sat_total,
    }
    if labels is not None:
        out["accuracy_float"] = float(np.mean(f_idx == labels))
        out["accuracy_fixed"] = float(np.mean(q_idx == labels))
    return out


def write_report(outdir: Path, params: fm.FixedParams, results: dict[str, dict],
                 meta: dict) -> None:
    """report.json and report.md: end to end per condition, stage SQNR and saturations on the
    clean set, and the formats table."""
    outdir.mkdir(parents=True, exist_ok=True)
    cmp = results["clean"]
    rep = {"meta": meta, "formats": params.formats.table(), "conditions": results}
    (outdir / "report.json").write_text(json.dumps(rep, indent=1, default=float))
    lines = [f"# Quantization report: {params.config.name}", "",
             f"- checkpoint: `{meta.get('checkpoint')}`",
             f"- weights: INT{params.formats.weight_bits} per output channel",
             f"- calibration: {params.formats.calib.get('source')} "
             f"({params.formats.calib.get('clips')} clips)",
             f"- evaluated on: {meta.get('eval_source')} ({cmp['clips']} clips)",
             f"- command: `{meta.get('command')}`", "",
             "## End to end (fixed vs float)", "",
             "| condition | top-1 agreement | mean abs Δlogit | accuracy float | accuracy fixed |",
             "|---|---|---|---|---|"]
    for name, c in results.items():
        af = f"{100 * c['accuracy_float']:.2f} %" if "accuracy_float" in c else "–"
        aq = f"{100 * c['accuracy_fixed']:.2f} %" if "accuracy_fixed" in c else "–"
        lines.append(f"| {name} | {100 * c['top1_agreement']:.2f} % | "
                     f"{c['mean_abs_logit_error']:.4f} | {af} | {aq} |")
    sats = cmp["saturations"]
    designed = {k: v for k, v in sats.items() if k in fm.DESIGNED_CLAMPS}
    other = {k: v for k, v in sats.items() if k not in fm.DESIGNED_CLAMPS}
    lines += ["", "## Saturations (clean set)", "",
              "Unexpected (overflow): " + (", ".join(f"{k} {v}" for k, v in other.items()) or "none"),
              "", "Designed clamps: " + (", ".join(f"{k} {v} ({fm.DESIGNED_CLAMPS[k]})"
                                                   for k, v in designed.items()) or "none"),
              "", "## Stages (fixed vs float, clean set)", "", "| stage | SQNR dB | float max abs |",
              "|---|---|---|"]
    for k, v in cmp["stages"].items():
        lines.append(f"| {k} | {v['sqnr_db']:.1f} | {v['float_max_abs']:.4g} |")
    lines += ["", "## Formats", "", "| edge | format | source | observed max | headroom | what |",
              "|---|---|---|---|---|---|"]
    for r in params.formats.table():
        om = r.get("observed_max")
        lines.append(f"| {r['edge']} | {r['format']} | {r['source']} | "
                     f"{'' if om is None else f'{om:.4g}'} | {r.get('headroom') or ''} | {r['what']} |")
    (outdir / "report.md").write_text("\n".join(lines) + "\n")


def _eval_set(spec: str, ckpt: Checkpoint, limit: int | None):
    """Clips (and labels, when known) to compare on: ``synthetic`` (the test split of the
    corpus the checkpoint was trained on), a Speech Commands-layout directory (its test split)
    or a directory of WAVs (no labels)."""
    from .calib import calibration_from_dir
    ev = Path(spec)
    if spec == "synthetic" or (ev / "testing_list.txt").exists():
        from .datasets import resolve_data
        from .evaluate import corpus_args_from_ckpt
        kw = (corpus_args_from_ckpt(ckpt) or {}) if spec == "synthetic" else {}
        data = resolve_data(spec, **kw)
        ds = data.split("test")
        audio, labels = ds.load_all(progress=True)
        name = (f"synthetic corpus {data.info.get('params_hash')}" if data.kind == "synthetic"
                else str(data.root))
        src, root = f"{name} (test split)", data
    else:
        audio, _ = calibration_from_dir(ev)
        labels, src, root = None, str(ev), None
    if limit:
        audio = audio[:limit]
        labels = None if labels is None else labels[:limit]
    return audio, labels, src, root


def _noisy(audio: np.ndarray, data, kind: str, snr: float, seed: int = 0) -> np.ndarray:
    """The evaluation's noise for each clip (same draw as ``evaluate``), mixed at ``snr``."""
    from .data import mix_at_snr
    from .evaluate import clip_noise
    speech = data.babble_speech(avoid="test")[0] if (data is not None and kind == "babble") else []
    if kind == "babble" and not speech:
        raise NanoMambaError("babble needs held-out speech: use --eval synthetic or a corpus")
    noise = np.stack([clip_noise(kind, i, seed, speech) for i in range(len(audio))])
    mixed = mix_at_snr(audio, noise, snr)
    return np.clip(np.rint(mixed * 32768), -32768, 32767).astype(np.float32) / 32768


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nanomamba_hw.quantize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="checkpoint (default: the shipped model/ checkpoint)")
    ap.add_argument("--calib", help="directory of calibration WAVs (default: the synthetic "
                                    "validation split, clean + noisy, plus edge signals)")
    ap.add_argument("--weights", choices=("int8", "int16"), default="int8")
    ap.add_argument("--out", help="write the artefact JSON here")
    ap.add_argument("--report", help="write report.json and report.md into this directory")
    ap.add_argument("--eval", help="what to compare on: 'synthetic' (the checkpoint's corpus, "
                                   "test split), a Speech Commands-layout directory (test "
                                   "split) or a directory of WAVs; default: the calibration set")
    ap.add_argument("--noise-snr", type=float, action="append", default=[],
                    help="also compare with each noise type mixed in at this SNR (dB); "
                         "repeatable; needs --eval synthetic or a corpus for babble")
    ap.add_argument("--limit", type=int, help="use at most this many evaluation clips")
    args = ap.parse_args(argv)
    from .predict import resolve_ckpt
    t0 = time.time()
    try:
        ckpt = load_checkpoint(resolve_ckpt(args.ckpt))
        wb = 8 if args.weights == "int8" else 16
        from .calib import calibration_from_dir, default_calibration
        calib_audio, info = (calibration_from_dir(args.calib) if args.calib
                             else default_calibration(progress=True))
        params = fm.quantize(ckpt, calib_audio, weight_bits=wb, calib_info=info)
        params.provenance["weights_hash"] = _ckpt_hash(ckpt)
        if args.eval:
            audio, labels, src, data = _eval_set(args.eval, ckpt, args.limit)
        else:
            audio, labels, src, data = calib_audio[:args.limit], None, "the calibration set", None
        conditions = [("clean", audio)]
        from .data import NOISE_TYPES
        for snr in args.noise_snr:
            for kind in NOISE_TYPES:
                conditions.append((f"{kind} {snr:g} dB", _noisy(audio, data, kind, snr)))
    except NanoMambaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        params.save(args.out)
        print(f"wrote {args.out}")
    results = {}
    for name, x in conditions:
        cmp = compare(params, ckpt, x, labels)
        results[name] = cmp
        acc = (f", accuracy float {100 * cmp['accuracy_float']:.2f} % fixed "
               f"{100 * cmp['accuracy_fixed']:.2f} %" if "accuracy_float" in cmp else "")
        print(f"{name:>16}: top-1 agreement {100 * cmp['top1_agreement']:.2f} % on "
              f"{cmp['clips']} clips, mean |Δlogit| {cmp['mean_abs_logit_error']:.4f}{acc}")
    print("saturations (clean):", results["clean"]["saturations"] or "none")
    if args.report:
        meta = {"checkpoint": ckpt.path, "eval_source": src,
                "command": "python -m nanomamba_hw.quantize " + " ".join(
                    sys.argv[1:] if argv is None else argv),
                "seconds": round(time.time() - t0, 1)}
        write_report(Path(args.report), params, results, meta)
        print(f"wrote {args.report}/report.md and report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
