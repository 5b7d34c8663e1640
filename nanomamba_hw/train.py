"""``python -m nanomamba_hw.train``: train a NanoMamba variant with the original recipe.

The recipe is model-math.md §8 (docs/training.md has the details and the measured numbers):

- AdamW, lr 3e-3, weight decay 1e-4 on every parameter; cosine annealing stepped per batch
  down to 3e-5 over the whole run, no warm-up; gradient-norm clip 1.0; cross-entropy with
  label smoothing 0.1; the checkpoint with the best clean validation accuracy is kept.
- Train augmentation, per clip: time shift by U{−1600..1599} samples with zero fill, gain
  U(0.8, 1.2), and with p = 0.3 Gaussian noise of σ = 0.005.
- ``--noise-aug`` (on by default; it is how the headline models were trained): the first
  ``int(B · share)`` clips of each shuffled batch are mixed with noise at a random SNR, with the
  original 30-epoch curriculum scaled to ``--epochs`` (:func:`curriculum`). The noise type is
  uniform over :data:`~nanomamba_hw.data.NOISE_TYPES`; babble is made from the corpus's held-out
  speech.

Silence items of the train split are redrawn every epoch (the original redrew them on every
load). The run is seeded (torch and numpy); on CPU it is repeatable for a given machine and
thread count.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle worker threads sleep instead of spinning. On the 2-core
# machine a spinning 2-thread step (130 ms idle) took 0.8-3.5 s whenever another process was
# busy; a sleeping one costs ~20 % when idle (158 ms) and degrades gracefully (~0.3 s) under
# load. Export OMP_WAIT_POLICY=ACTIVE on a dedicated machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import datetime
import json
import math
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import save_checkpoint
from .config import CLIP_SAMPLES, SAMPLE_RATE, VARIANTS, variant
from .data import NOISE_TYPES, make_noise, mix_at_snr
from .datasets import (DEFAULT_BABBLE_CLIPS, DEFAULT_CORPUS_SEED, DEFAULT_PER_WORD, DataSource,
                       resolve_data)
from .errors import NanoMambaError
from .reference import NanoMamba

REPO = Path(__file__).resolve().parent.parent

# The recipe (model-math.md §8); every value is also a command-line option. The original ran
# 30 epochs of batch 128 over 86k real clips; the defaults here are those of the shipped model
# (model/README.md): 40 epochs of batch 64 over the 4,550-clip synthetic train split.
RECIPE = {
    "optimizer": "AdamW", "lr": 3e-3, "weight_decay": 1e-4, "lr_min": 3e-5,
    "schedule": "cosine annealing per batch over all epochs, no warm-up",
    "grad_clip_norm": 1.0, "label_smoothing": 0.1, "seed": 42,
    "augment": {"time_shift": [-1600, 1600], "gain": [0.8, 1.2], "gaussian_p": 0.3,
                "gaussian_sigma": 0.005},
    "selection": "best clean validation accuracy",
}
DEFAULT_EPOCHS = 40
DEFAULT_BATCH = 64
SHIFT = 1600
GAIN = (0.8, 1.2)
GAUSS_P, GAUSS_SIGMA = 0.3, 0.005
NOISE_SHARE = 0.5            # largest share of noisy clips per batch
NOISE_BANK_SECONDS = 30      # per noise type and epoch, see NoiseBank


# --------------------------------------------------------------------------------------------
# Recipe pieces


def curriculum(epoch: int, epochs: int) -> tuple[float, tuple[float, float] | None]:
    """Noisy share of a batch and SNR range (dB) in 0-based ``epoch`` of ``epochs``.

    The original schedule is for 30 epochs: epochs 0–2 clean; 3–9 a share rising as
    0.5·(ep − 3)/7 at SNR U(5, 15); 10–19 share 0.5 at U(0, 10); 20+ share 0.5 at U(−5, 10).
    Its boundaries 3, 10, 20 are the fractions 1/10, 1/3, 2/3 of the run; here they are scaled to
    ``epochs`` (rounded half up), so ``epochs=30`` gives exactly the original.
    """
    e1 = int(epochs / 10 + 0.5)
    e2 = int(epochs / 3 + 0.5)
    e3 = int(2 * epochs / 3 + 0.5)
    if epoch < e1:
        return 0.0, None
    if epoch < e2:
        return NOISE_SHARE * (epoch - e1) / (e2 - e1), (5.0, 15.0)
    if epoch < e3:
        return NOISE_SHARE, (0.0, 10.0)
    return NOISE_SHARE, (-5.0, 10.0)


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The recipe's train augmentation of a (B, 16000) batch, per clip: time shift by
    U{−1600..1599} samples with zero fill (positive = later), gain U(0.8, 1.2), then with
    p = 0.3 additive N(0, 0.005²)."""
    n, length = x.shape
    out = np.zeros_like(x)
    for i, s in enumerate(rng.integers(-SHIFT, SHIFT, size=n)):
        if s >= 0:
            out[i, s:] = x[i, :length - s]
        else:
            out[i, :length + s] = x[i, -s:]
    out *= rng.uniform(*GAIN, size=(n, 1)).astype(np.float32)
    noisy = np.flatnonzero(rng.random(n) < GAUSS_P)
    if noisy.size:
        out[noisy] += GAUSS_SIGMA * rng.standard_normal((noisy.size, length), dtype=np.float32)
    return out


class NoiseBank:
    """Noise for training: one long stream per type, drawn afresh every epoch; a noisy clip
    gets a random one-second crop of a random type.

    Generating every clip's noise on its own costs ~2 ms a clip (about a third of a training
    step); crops of a 30 s stream per type give the same statistics for a fraction of that.
    """

    def __init__(self, rng: np.random.Generator, speech: list[np.ndarray],
                 types: tuple[str, ...] = NOISE_TYPES, seconds: int = NOISE_BANK_SECONDS):
        self.types = types
        self.streams = [make_noise(k, seconds * SAMPLE_RATE, rng, speech_source=speech)
                        for k in types]

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, CLIP_SAMPLES), dtype=np.float32)
        for i, k in enumerate(rng.integers(0, len(self.types), size=n)):
            s = self.streams[k]
            start = int(rng.integers(0, len(s) - CLIP_SAMPLES + 1))
            out[i] = s[start:start + CLIP_SAMPLES]
        return out


def accuracy(model: NanoMamba, x: np.ndarray, y: np.ndarray, batch: int = 256
             ) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on clips ``x`` with labels ``y``."""
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(torch.from_numpy(x[i:i + batch]))
            yb = torch.from_numpy(y[i:i + batch])
            correct += int((logits.argmax(1) == yb).sum())
            loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
    return correct / max(len(x), 1), loss / max(len(x), 1)


# --------------------------------------------------------------------------------------------
# Provenance


def git_commit() -> str | None:
    """HEAD of the repository this package lives in, with ``+dirty`` for local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", "nanomamba_hw.train", *map(str, args)])


# --------------------------------------------------------------------------------------------
# Training


def default_out(variant_name: str, seed: int) -> Path:
    return Path("runs") / f"nanomamba-{variant_name}-seed{seed}.pt"


def history_path(ckpt: Path) -> Path:
    """The per-epoch history JSON written next to a checkpoint."""
    return ckpt.with_name(ckpt.stem + ".history.json")


def train(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Run one training; returns the summary (also stored in the checkpoint's metrics)."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    config = variant(args.variant)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    progress = not args.quiet

    t0 = time.perf_counter()
    data: DataSource = resolve_data(args.data, per_word=args.per_word,
                                    corpus_seed=args.corpus_seed, unknown_total=args.unknown,
                                    babble_clips=args.babble_clips, progress=progress)
    data_seconds = time.perf_counter() - t0
    print(f"data: {data.describe()}", flush=True)
    x_train, y_train, ds_train = data.load("train", seed=args.seed, progress=progress)
    x_val, y_val, _ = data.load("val", progress=progress)
    speech, babble_from = (data.babble_speech() if args.noise_aug else ([], None))
    steps = len(x_train) // args.batch_size           # drop_last, as the original
    if steps < 1:
        raise NanoMambaError(f"--batch-size {args.batch_size} is larger than the "
                             f"{len(x_train)} training clips")
    print(f"train {len(x_train)} clips ({steps} batches of {args.batch_size}), val "
          f"{len(x_val)}; babble from {babble_from or '-'}; {args.threads} torch threads",
          flush=True)

    model = NanoMamba(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps,
                                                       eta_min=args.lr_min)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    out = Path(args.out) if args.out else default_out(args.variant, args.seed)

    recipe = {**RECIPE, "lr": args.lr, "lr_min": args.lr_min, "weight_decay": args.weight_decay,
              "label_smoothing": args.label_smoothing, "grad_clip_norm": args.clip,
              "batch_size": args.batch_size, "epochs": args.epochs, "seed": args.seed,
              "drop_last": True, "noise_aug": bool(args.noise_aug),
              "silence": "train silence crops redrawn every epoch"}
    if args.noise_aug:
        recipe["noise_curriculum"] = {
            "scaled_from": "30-epoch original: clean 0-2; share 0.5*(ep-3)/7 at U(5,15) dB "
                           "3-9; 0.5 at U(0,10) 10-19; 0.5 at U(-5,10) 20+",
            "boundaries_fraction": [0.1, 1 / 3, 2 / 3],
            "per_epoch": [dict(zip(("share", "snr_db"), curriculum(e, args.epochs)))
                          for e in range(args.epochs)],
            "noise_types": list(NOISE_TYPES), "babble_speech": babble_from,
            "noise_source": f"random 1 s crops of one {NOISE_BANK_SECONDS} s stream per type, "
                            "redrawn every epoch", "mixing": "mix_at_snr (whole-clip RMS)"}
    provenance = {
        "trained_by": "nanomamba_hw.train", "command": command_line(argv),
        "variant": args.variant, "data": {**data.info, "spec": data.spec},
        "seed": args.seed, "git_commit": git_commit(), "torch": str(torch.__version__),
        "numpy": str(np.__version__), "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads, "
                   f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "recipe": recipe,
    }

    history: list[dict] = []
    best = {"val_acc": -1.0, "epoch": -1, "state": None}

    def metrics(final: bool) -> dict:
        m = {"val_acc": best["val_acc"], "best_epoch": best["epoch"],
             "epochs_run": len(history), "train_clips": len(x_train),
             "val_clips": len(x_val)}
        if final:
            m["train_wall_seconds"] = round(time.perf_counter() - t_start, 1)
            m["train_cpu_seconds"] = round(time.process_time() - cpu_start, 1)
        return m

    def save(final: bool) -> None:
        saved = copy.deepcopy(model)
        saved.load_state_dict(best["state"])
        save_checkpoint(out, saved, provenance={**provenance, "history": history},
                        metrics=metrics(final))

    t_loop = time.perf_counter()
    for epoch in range(args.epochs):
        te = time.perf_counter()
        share, snr = curriculum(epoch, args.epochs) if args.noise_aug else (0.0, None)
        n_noisy = int(args.batch_size * share)
        bank = NoiseBank(rng, speech) if n_noisy else None
        if ds_train.n_silence:  # fresh silence crops every epoch
            x_train[ds_train.n_files:] = ds_train.silence_array(seed=args.seed * 1000 + epoch + 1)
        perm = rng.permutation(len(x_train))
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        desc = f"epoch {epoch + 1}/{args.epochs}"
        bar = tqdm(range(steps), desc=desc, unit="batch", disable=not progress,
                   mininterval=1.0, leave=False, file=sys.stderr)
        for step in bar:
            idx = perm[step * args.batch_size:(step + 1) * args.batch_size]
            xb = augment(x_train[idx], rng)
            if n_noisy:
                snrs = rng.uniform(snr[0], snr[1], size=n_noisy)
                xb[:n_noisy] = mix_at_snr(xb[:n_noisy], bank.draw(n_noisy, rng), snrs)
            yb = torch.from_numpy(y_train[idx])
            logits = model(torch.from_numpy(xb))
            loss = loss_fn(logits, yb)
            if not torch.isfinite(loss):
                raise NanoMambaError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}; "
                                     "try a lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            sched.step()
            seen += len(idx)
            correct += int((logits.detach().argmax(1) == yb).sum())
            loss_sum += float(loss.detach()) * len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%",
                            refresh=False)
        bar.close()
        train_seconds = time.perf_counter() - te
        val_acc, val_loss = accuracy(model, x_val, y_val)
        seconds = time.perf_counter() - te
        improved = val_acc > best["val_acc"]
        if improved:
            best.update(val_acc=val_acc, epoch=epoch + 1,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})
        history.append({"epoch": epoch + 1, "train_loss": round(loss_sum / seen, 5),
                        "train_acc": round(correct / seen, 5), "val_loss": round(val_loss, 5),
                        "val_acc": round(val_acc, 5), "noise_share": round(share, 4),
                        "snr_db": list(snr) if n_noisy else None,
                        "lr_end": float(f"{sched.get_last_lr()[0]:.4g}"),
                        "train_seconds": round(train_seconds, 2), "seconds": round(seconds, 2)})
        noise = f"noise {share:.2f} @ {snr[0]:g}..{snr[1]:g} dB" if n_noisy else "clean"
        print(f"{desc}: loss {loss_sum / seen:.3f}  train acc {100 * correct / seen:5.1f}%  "
              f"val acc {100 * val_acc:5.1f}%{' *' if improved else '  '}  {noise:<24}  "
              f"lr {sched.get_last_lr()[0]:.2e}  {seconds:.1f} s", flush=True)
        if improved:
            save(final=False)  # an interrupted run still leaves its best checkpoint

    loop_seconds = time.perf_counter() - t_loop
    save(final=True)
    summary = {**metrics(final=True), "data_seconds": round(data_seconds, 1),
               "loop_seconds": round(loop_seconds, 1), "checkpoint": str(out)}
    hist = {"summary": summary, "provenance": provenance, "history": history}
    history_path(out).write_text(json.dumps(hist, indent=1) + "\n")
    print(f"best val acc {100 * best['val_acc']:.2f}% at epoch {best['epoch']}; wrote {out} "
          f"and {history_path(out)}")
    print(f"wall time {summary['train_wall_seconds']:.0f} s (data {data_seconds:.0f} s, "
          f"epochs {loop_seconds:.0f} s), CPU time {summary['train_cpu_seconds']:.0f} s")
    return summary


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m nanomamba_hw.train",
        description="Train a NanoMamba variant with the original recipe (model-math.md §8) on "
                    "the synthetic corpus or a Speech Commands directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--variant", default="tiny-dualpcen",
                    help=f"model variant: {', '.join(VARIANTS)}")
    ap.add_argument("--data", default="synthetic",
                    help="'synthetic' (espeak-ng corpus, built and cached on first use) or a "
                         "Speech Commands-layout directory")
    g = ap.add_argument_group("synthetic corpus (with --data synthetic)")
    g.add_argument("--per-word", type=int, default=DEFAULT_PER_WORD,
                   help="utterances per keyword (split 70/15/15 by voice)")
    g.add_argument("--unknown", type=int, default=None,
                   help="unknown-word utterances in total (default 2 × per-word)")
    g.add_argument("--corpus-seed", type=int, default=DEFAULT_CORPUS_SEED)
    g.add_argument("--babble-clips", type=int, default=DEFAULT_BABBLE_CLIPS)
    r = ap.add_argument_group("recipe")
    r.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help="the original used 30 (on 19x more data)")
    r.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                   help="the original used 128")
    r.add_argument("--lr", type=float, default=RECIPE["lr"])
    r.add_argument("--lr-min", type=float, default=RECIPE["lr_min"],
                   help="end of the cosine schedule")
    r.add_argument("--weight-decay", type=float, default=RECIPE["weight_decay"])
    r.add_argument("--label-smoothing", type=float, default=RECIPE["label_smoothing"])
    r.add_argument("--clip", type=float, default=RECIPE["grad_clip_norm"],
                   help="gradient-norm clip")
    r.add_argument("--noise-aug", action=argparse.BooleanOptionalAction, default=True,
                   help="noise curriculum (the original's, scaled to --epochs)")
    r.add_argument("--seed", type=int, default=RECIPE["seed"])
    ap.add_argument("--out", help="checkpoint to write (default runs/nanomamba-VARIANT-seedS.pt); "
                                  "the history JSON goes next to it")
    ap.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                    help="torch CPU threads")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        variant(args.variant)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    for name in ("epochs", "batch_size", "per_word", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        ap.error("--lr must be a positive number")
    threads = torch.get_num_threads()
    try:
        train(args, argv)
    except NanoMambaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the best checkpoint so far (if any) is on disk", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)  # for callers that run main() in-process (tests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
