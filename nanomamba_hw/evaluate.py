"""``python -m nanomamba_hw.evaluate``: accuracy of a checkpoint, clean and in noise, with any
engine.

For one split (default ``test``) it measures the clean accuracy, per-class accuracy and the
confusion matrix, and the accuracy under each noise type × SNR. Every clip gets its own noise
realisation per type, drawn from ``(seed, noise type, clip index in the split)``; it is the same
at every SNR (only its level changes), for every engine, and for any ``--limit`` subset. Mixing
is :func:`~nanomamba_hw.data.mix_at_snr` (whole-clip RMS). Babble is made from held-out speech
(the synthetic corpus's ``_babble_`` voices).

Differences from the original evaluation (model-math.md §8): it ran the noise sweep on the
validation split with one noise realisation shared by each batch of 128; here the sweep runs on
the chosen split (test by default) with independent noise per clip.

Outputs in ``--out``: ``eval.json`` (everything), ``eval.md`` (tables) and
``accuracy_vs_snr.png`` (one line per noise type, clean accuracy as a horizontal line).
The clips only ever reach the model through :func:`~nanomamba_hw.engines.make_engine`.
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep rather than spin (see train.py); must precede the torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .checkpoint import Checkpoint, load_checkpoint
from .config import CLIP_SAMPLES
from .data import NOISE_TYPES, make_noise, mix_at_snr
from .datasets import (DEFAULT_BABBLE_CLIPS, DEFAULT_CORPUS_SEED, DEFAULT_PER_WORD, DataSource,
                       resolve_data, subset_indices)
from .engines import engine_names, make_engine
from .errors import NanoMambaError
from .predict import resolve_ckpt

DEFAULT_SNRS: tuple[float, ...] = (-15, -10, -5, 0, 5, 10, 15)
CHUNK = 256   # clips per engine call (and per noise generation)


def clip_noise(kind: str, index: int, seed: int, speech: list[np.ndarray]) -> np.ndarray:
    """The noise of type ``kind`` for clip ``index`` of the split: fixed by (seed, type, index)."""
    rng = np.random.default_rng([seed, NOISE_TYPES.index(kind), index])
    return make_noise(kind, CLIP_SAMPLES, rng, speech_source=speech)


def _snr_key(snr: float) -> str:
    return f"{snr:g}"


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def corpus_args_from_ckpt(ckpt: Checkpoint) -> dict | None:
    """The synthetic-corpus parameters a checkpoint of ours was trained on, if it says."""
    data = (ckpt.provenance or {}).get("data") or {}
    params = data.get("params") if data.get("kind") == "synthetic" else None
    if not isinstance(params, dict) or "per_word" not in params:
        return None
    return {"per_word": int(params["per_word"]), "corpus_seed": int(params.get("seed", 0)),
            "unknown_total": params.get("unknown_total"),
            "babble_clips": int(params.get("babble_clips", DEFAULT_BABBLE_CLIPS))}


def evaluate(ckpt: Checkpoint, data: DataSource, *, split: str = "test",
             noise_types: tuple[str, ...] = NOISE_TYPES, snrs: tuple[float, ...] = DEFAULT_SNRS,
             engine: str = "float", limit: int | None = None, seed: int = 0,
             progress: bool = True) -> dict:
    """Run the evaluation and return the result record (what ``eval.json`` holds)."""
    t0 = time.perf_counter()
    eng = make_engine(engine, ckpt)
    ds = data.split(split)
    names = list(ckpt.class_names)
    n_classes = len(names)
    pick = subset_indices(len(ds), limit, seed)
    if len(pick) == 0:
        raise NanoMambaError(f"the {split} split of {data.root} holds no clips")
    labels = ds.labels[pick]
    speech, babble_from = ([], None)
    if "babble" in noise_types:
        speech, babble_from = data.babble_speech(avoid=split)

    total = len(pick) * (1 + len(noise_types) * len(snrs))
    bar = tqdm(total=total, desc=f"evaluate {engine}", unit="clip", disable=not progress,
               mininterval=1.0, file=sys.stderr)
    clean_pred = np.empty(len(pick), dtype=np.int64)
    correct = {k: {s: 0 for s in snrs} for k in noise_types}
    for c0 in range(0, len(pick), CHUNK):
        idx = pick[c0:c0 + CHUNK]
        x = np.stack([ds[int(i)][0] for i in idx]).astype(np.float32)
        y = labels[c0:c0 + CHUNK]
        clean_pred[c0:c0 + len(idx)] = [r["index"] for r in eng.run(x)]
        bar.update(len(idx))
        for kind in noise_types:
            noise = np.stack([clip_noise(kind, int(i), seed, speech) for i in idx])
            for snr in snrs:
                pred = np.array([r["index"] for r in eng.run(mix_at_snr(x, noise, snr))])
                correct[kind][snr] += int((pred == y).sum())
                bar.update(len(idx))
    bar.close()

    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, clean_pred), 1)
    per_class = {}
    for c, name in enumerate(names):
        n = int(confusion[c].sum())
        per_class[name] = {"n": n, "accuracy": (float(confusion[c, c] / n) if n else None)}
    n = len(pick)
    noisy = {k: {_snr_key(s): correct[k][s] / n for s in snrs} for k in noise_types}
    mean = ({_snr_key(s): float(np.mean([noisy[k][_snr_key(s)] for k in noise_types]))
             for s in snrs} if noise_types else {})
    return {
        "checkpoint": {"path": ckpt.path, "sha256": _sha256(ckpt.path) if ckpt.path else None,
                       "model": ckpt.config.name, "layout": ckpt.layout,
                       "parameters": ckpt.model.num_parameters(),
                       "trained_val_acc": ckpt.metrics.get("val_acc")},
        "engine": engine,
        "data": {**data.info, "spec": data.spec},
        "split": split, "n_clips": n, "limit": limit, "seed": seed,
        "class_names": names,
        "clean": {"accuracy": float(np.trace(confusion) / n), "correct": int(np.trace(confusion)),
                  "per_class": per_class, "confusion": confusion.tolist()},
        "noise_types": list(noise_types), "snrs_db": [float(s) for s in snrs],
        "noisy": noisy, "noisy_mean": mean,
        "noise": {"per_clip_seed": "numpy default_rng([seed, NOISE_TYPES.index(type), "
                                   "clip index in split])",
                  "mixing": "mix_at_snr: clean + noise * rms_c * 10^(-snr/20) / rms_n",
                  "babble_speech": babble_from},
        "seconds": round(time.perf_counter() - t0, 1),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------
# Reports


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def snr_table(result: dict) -> list[str]:
    """Markdown table: one row per noise type (and the mean), one column per SNR."""
    snrs = [_snr_key(s) for s in result["snrs_db"]]
    lines = ["| noise | " + " | ".join(f"{s} dB" for s in snrs) + " |",
             "|---|" + "---:|" * len(snrs)]
    for k in result["noise_types"]:
        lines.append(f"| {k} | " + " | ".join(_pct(result["noisy"][k][s]) for s in snrs) + " |")
    if len(result["noise_types"]) > 1:
        lines.append("| **mean** | " + " | ".join(f"**{_pct(result['noisy_mean'][s])}**"
                                                 for s in snrs) + " |")
    return lines


def markdown(result: dict) -> str:
    c = result["clean"]
    names = result["class_names"]
    ck = result["checkpoint"]
    lines = [
        f"# Evaluation of {ck['model']}",
        "",
        (f"- checkpoint: `{ck['path']}` (sha256 `{(ck['sha256'] or '')[:16]}…`, "
         f"{ck['parameters']:,} parameters)"),
        f"- engine: `{result['engine']}`",
        (f"- data: `{result['data']['root']}` ({result['data']['kind']}), split "
         f"**{result['split']}**, {result['n_clips']} clips"
         + (f" (random subset, seed {result['seed']})" if result["limit"] else "")),
        (f"- noise: independent realisation per clip and type (seed {result['seed']}), the "
         f"same at every SNR; babble speech from `{result['noise']['babble_speech']}`"),
        "",
        f"**Clean accuracy: {_pct(c['accuracy'])} %** ({c['correct']}/{result['n_clips']})",
        "",
    ]
    if result["noise_types"]:
        lines += ["## Accuracy (%) in noise", ""] + snr_table(result) + [
            "", "![accuracy vs SNR](accuracy_vs_snr.png)", ""]
    lines += ["## Per-class clean accuracy", "", "| class | clips | accuracy (%) |",
              "|---|---:|---:|"]
    for name in names:
        pc = c["per_class"][name]
        lines.append(f"| {name} | {pc['n']} | {_pct(pc['accuracy'])} |")
    lines += ["", "## Clean confusion matrix", "", "Rows: true class; columns: predicted.", "",
              "| true \\ pred | " + " | ".join(names) + " |",
              "|---|" + "---:|" * len(names)]
    for name, row in zip(names, c["confusion"]):
        lines.append(f"| **{name}** | " + " | ".join(str(v) if v else "·" for v in row) + " |")
    lines.append("")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snrs = result["snrs_db"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for k in result["noise_types"]:
        ax.plot(snrs, [100 * result["noisy"][k][_snr_key(s)] for s in snrs], marker="o",
                label=k)
    clean = 100 * result["clean"]["accuracy"]
    ax.axhline(clean, color="black", linestyle="--", linewidth=1.2,
               label=f"clean ({clean:.1f} %)")
    ax.axhline(100 / len(result["class_names"]), color="grey", linestyle=":", linewidth=1,
               label="chance")
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    if snrs:
        ax.set_xticks(snrs)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{result['checkpoint']['model']} — {result['split']} split, "
                 f"{result['n_clips']} clips, {result['engine']} engine", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(result: dict, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "eval.json", "md": out / "eval.md", "png": out / "accuracy_vs_snr.png"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["md"].write_text(markdown(result))
    plot(result, paths["png"])
    return paths


def print_summary(result: dict) -> None:
    print(f"{result['checkpoint']['model']} on {result['split']} ({result['n_clips']} clips), "
          f"engine {result['engine']}: clean accuracy {_pct(result['clean']['accuracy'])} %")
    if result["noise_types"]:
        snrs = [_snr_key(s) for s in result["snrs_db"]]
        print(f"{'noise':<9}" + "".join(f"{s + ' dB':>9}" for s in snrs))
        rows = list(result["noise_types"]) + (["mean"] if len(result["noise_types"]) > 1 else [])
        for k in rows:
            vals = result["noisy_mean"] if k == "mean" else result["noisy"][k]
            print(f"{k:<9}" + "".join(f"{_pct(vals[s]):>9}" for s in snrs))
    worst = min(((v["accuracy"], k) for k, v in result["clean"]["per_class"].items()
                 if v["accuracy"] is not None), default=None)
    per = "  ".join(f"{k} {_pct(v['accuracy'])}" for k, v in result["clean"]["per_class"].items())
    print(f"per class (clean, %): {per}")
    if worst:
        print(f"lowest class: {worst[1]} {_pct(worst[0])} %")


# --------------------------------------------------------------------------------------------
# Command line


def _parse_list(text: str, what: str, conv):
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return tuple(conv(t) for t in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--{what}: not a comma-separated list: {text!r}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m nanomamba_hw.evaluate",
        description="Accuracy of a checkpoint on a split, clean and for each noise type × SNR, "
                    "through any engine; writes eval.json, eval.md and accuracy_vs_snr.png.")
    ap.add_argument("--ckpt", help="checkpoint (default: the shipped model/ checkpoint)")
    ap.add_argument("--data", default="synthetic",
                    help="'synthetic' or a Speech Commands-layout directory (default synthetic)")
    ap.add_argument("--per-word", type=int, default=None,
                    help="synthetic corpus size; default: the corpus the checkpoint was trained "
                         f"on (from its provenance), else {DEFAULT_PER_WORD}")
    ap.add_argument("--corpus-seed", type=int, default=None,
                    help=f"synthetic corpus seed (default as --per-word, else "
                         f"{DEFAULT_CORPUS_SEED})")
    ap.add_argument("--split", default="test", help="train, val or test (default test)")
    ap.add_argument("--noise", default=",".join(NOISE_TYPES),
                    help="comma-separated noise types, or 'none' (default: all five)")
    ap.add_argument("--snr", default=",".join(f"{s:g}" for s in DEFAULT_SNRS),
                    help="comma-separated SNRs in dB (default -15,-10,-5,0,5,10,15)")
    ap.add_argument("--engine", default="float", help=f"engine: {', '.join(engine_names())}")
    ap.add_argument("--out", help="output directory (default eval/<checkpoint>-<split>-<engine>)")
    ap.add_argument("--limit", type=int, default=None,
                    help="evaluate a seeded random subset of this many clips")
    ap.add_argument("--seed", type=int, default=0, help="noise and subset seed (default 0)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def _join_negative_values(argv: list[str]) -> list[str]:
    """Allow ``--snr -15,-10`` (argparse would read ``-15,-10`` as an option)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--snr" and i + 1 < len(argv):
            out.append(f"--snr={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    if args.noise.strip().lower() in ("none", ""):
        noise_types: tuple[str, ...] = ()
    else:
        noise_types = _parse_list(args.noise, "noise", str)
        bad = [k for k in noise_types if k not in NOISE_TYPES]
        if bad:
            ap.error(f"unknown noise type(s) {', '.join(bad)}; known: {', '.join(NOISE_TYPES)}")
    try:
        snrs = _parse_list(args.snr, "snr", float)
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    if noise_types and not snrs:
        ap.error("--snr: no SNR given")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be >= 1")
    try:
        if args.engine not in engine_names():  # fail before building any data
            raise NanoMambaError(f"unknown engine {args.engine!r}; available: "
                                 f"{', '.join(engine_names())}")
        ckpt = load_checkpoint(resolve_ckpt(args.ckpt))
        corpus = {"per_word": DEFAULT_PER_WORD, "corpus_seed": DEFAULT_CORPUS_SEED,
                  "unknown_total": None, "babble_clips": DEFAULT_BABBLE_CLIPS}
        if args.data == "synthetic" and args.per_word is None and args.corpus_seed is None:
            from_ckpt = corpus_args_from_ckpt(ckpt)
            if from_ckpt:
                corpus = from_ckpt
                print(f"using the checkpoint's training corpus: per_word {corpus['per_word']}, "
                      f"seed {corpus['corpus_seed']}", file=sys.stderr)
        if args.per_word is not None:
            corpus["per_word"] = args.per_word
        if args.corpus_seed is not None:
            corpus["corpus_seed"] = args.corpus_seed
        data = resolve_data(args.data, progress=not args.quiet, **corpus)
        result = evaluate(ckpt, data, split=args.split, noise_types=noise_types,
                          snrs=snrs if noise_types else (), engine=args.engine,
                          limit=args.limit, seed=args.seed, progress=not args.quiet)
    except NanoMambaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # e.g. a bad split name
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (
        Path("eval") / f"{Path(ckpt.path).stem}-{args.split}-{args.engine}")
    paths = write_outputs(result, out)
    print_summary(result)
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
