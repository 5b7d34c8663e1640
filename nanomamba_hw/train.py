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

``--init CKPT`` starts from a checkpoint instead of a random initialisation. ``--qat-epochs N``
adds N epochs of quantization-aware fine-tuning after the normal ones (or instead of them, with
``--epochs 0 --init CKPT``): the weights of every layer the fixed model stores as INT8 per
output channel are fake-quantized with a straight-through estimator (:mod:`nanomamba_hw.qat`),
at lr ``--qat-lr`` → ``--qat-lr-min`` (cosine), with the noise of the curriculum's last phase;
validation runs on the snapped model, and the kept checkpoint is snapped: its quantized weights
are exactly on the INT8 grid of each output channel.
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
import hashlib
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

from . import qat
from .checkpoint import load_checkpoint, save_checkpoint
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
QAT_LR, QAT_LR_MIN = 3e-4, 3e-5
QAT_NOISE = (NOISE_SHARE, (-5.0, 10.0))   # the curriculum's last phase, for every QAT epoch


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


def _init_info(ck) -> dict:
    """What the provenance records about an ``--init`` checkpoint."""
    return {"checkpoint": ck.path, "sha256": ck.provenance.get("sha256") or _file_sha256(ck.path),
            "layout": ck.layout, "metrics": ck.metrics, "provenance": ck.provenance}


def _file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Run one training; returns the summary (also stored in the checkpoint's metrics)."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    progress = not args.quiet
    init = load_checkpoint(args.init) if args.init else None
    variant_name = ((init.provenance.get("variant") or init.config.name) if init
                    else args.variant)

    t0 = time.perf_counter()
    data: DataSource = resolve_data(args.data, per_word=args.per_word,
                                    corpus_seed=args.corpus_seed, unknown_total=args.unknown,
                                    babble_clips=args.babble_clips, progress=progress)
    data_seconds = time.perf_counter() - t0
    print(f"data: {data.describe()}", flush=True)
    if init is not None:
        was = (init.provenance.get("data") or {}).get("params_hash")
        if was and data.info.get("params_hash") and was != data.info["params_hash"]:
            print(f"warning: {args.init} was trained on corpus {was}, this run uses "
                  f"{data.info['params_hash']}", flush=True)
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

    if init is not None:
        model = init.model
        print(f"init: {args.init} ({init.config.name}, val acc "
              f"{init.metrics.get('val_acc', float('nan')):.4f})", flush=True)
    else:
        model = NanoMamba(variant(args.variant))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    out = Path(args.out) if args.out else default_out(variant_name, args.seed)

    recipe = {**RECIPE, "lr": args.lr, "lr_min": args.lr_min, "weight_decay": args.weight_decay,
              "label_smoothing": args.label_smoothing, "grad_clip_norm": args.clip,
              "batch_size": args.batch_size, "epochs": args.epochs, "seed": args.seed,
              "drop_last": True, "noise_aug": bool(args.noise_aug),
              "silence": "train silence crops redrawn every epoch",
              "init": args.init or "random"}
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
    if args.qat_epochs:
        share, snr = QAT_NOISE if args.noise_aug else (0.0, None)
        recipe["qat"] = {
            "epochs": args.qat_epochs, "lr": args.qat_lr, "lr_min": args.qat_lr_min,
            "schedule": "cosine annealing per batch over the QAT epochs, fresh AdamW "
                        "(same weight decay, clip, loss, augmentation)",
            "noise": {"share": share, "snr_db": list(snr) if snr else None},
            "start": "the best main-phase epoch" if args.epochs else "the --init checkpoint",
            "fake_quant": "W_q = clamp(round(W/s), -127, 127)*s, s = max|W_row|/127 per output "
                          "channel (detached), straight-through gradient to W",
            "layers": [name for name, _ in qat.quantized_layers(model)],
            "selection": "best clean validation accuracy of the snapped model over the QAT "
                         "epochs; the saved weights are snapped"}
    provenance = {
        "trained_by": "nanomamba_hw.train", "command": command_line(argv),
        "variant": variant_name, "data": {**data.info, "spec": data.spec},
        "seed": args.seed, "git_commit": git_commit(), "torch": str(torch.__version__),
        "numpy": str(np.__version__), "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads, "
                   f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "recipe": recipe,
    }
    if init is not None:
        provenance["init"] = _init_info(init)

    history: list[dict] = []
    best = {"val_acc": -1.0, "epoch": -1, "state": None}
    qat_info: dict = {}

    def metrics(final: bool) -> dict:
        m = {"val_acc": best["val_acc"], "best_epoch": best["epoch"],
             "epochs_run": len(history), "train_clips": len(x_train),
             "val_clips": len(x_val)}
        if qat_info:
            m["qat"] = dict(qat_info)
        if final:
            m["train_wall_seconds"] = round(time.perf_counter() - t_start, 1)
            m["train_cpu_seconds"] = round(time.process_time() - cpu_start, 1)
        return m

    def save(final: bool) -> None:
        saved = copy.deepcopy(model)
        saved.load_state_dict(best["state"])
        save_checkpoint(out, saved, provenance={**provenance, "history": history},
                        metrics=metrics(final))

    def run_epoch(opt, sched, share: float, snr, desc: str) -> tuple[float, float]:
        """One pass over the shuffled train split; (mean loss, accuracy) on its batches."""
        n_noisy = int(args.batch_size * share)
        bank = NoiseBank(rng, speech) if n_noisy else None
        if ds_train.n_silence:  # fresh silence crops every epoch
            x_train[ds_train.n_files:] = ds_train.silence_array(
                seed=args.seed * 1000 + len(history) + 1)
        perm = rng.permutation(len(x_train))
        model.train()
        seen = correct = 0
        loss_sum = 0.0
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
                raise NanoMambaError(f"non-finite loss at {desc}, step {step + 1}; "
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
        return loss_sum / seen, correct / seen

    def record(desc, te, train_seconds, loss, acc, val_acc, val_loss, share, snr, lr,
               improved, **extra) -> None:
        seconds = time.perf_counter() - te
        n_noisy = int(args.batch_size * share)
        history.append({"epoch": len(history) + 1, **extra, "train_loss": round(loss, 5),
                        "train_acc": round(acc, 5), "val_loss": round(val_loss, 5),
                        "val_acc": round(val_acc, 5), "noise_share": round(share, 4),
                        "snr_db": list(snr) if n_noisy else None,
                        "lr_end": float(f"{lr:.4g}"),
                        "train_seconds": round(train_seconds, 2), "seconds": round(seconds, 2)})
        noise = f"noise {share:.2f} @ {snr[0]:g}..{snr[1]:g} dB" if n_noisy else "clean"
        print(f"{desc}: loss {loss:.3f}  train acc {100 * acc:5.1f}%  "
              f"val acc {100 * val_acc:5.1f}%{' *' if improved else '  '}  {noise:<24}  "
              f"lr {lr:.2e}  {seconds:.1f} s", flush=True)

    # ---- main phase: the recipe
    t_loop = time.perf_counter()
    if args.epochs:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps,
                                                           eta_min=args.lr_min)
    for epoch in range(args.epochs):
        te = time.perf_counter()
        share, snr = curriculum(epoch, args.epochs) if args.noise_aug else (0.0, None)
        desc = f"epoch {epoch + 1}/{args.epochs}"
        loss, acc = run_epoch(opt, sched, share, snr, desc)
        train_seconds = time.perf_counter() - te
        val_acc, val_loss = accuracy(model, x_val, y_val)
        improved = val_acc > best["val_acc"]
        if improved:
            best.update(val_acc=val_acc, epoch=epoch + 1,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})
        record(desc, te, train_seconds, loss, acc, val_acc, val_loss, share, snr,
               sched.get_last_lr()[0], improved)
        if improved:
            save(final=False)  # an interrupted run still leaves its best checkpoint
    loop_seconds = time.perf_counter() - t_loop

    # ---- QAT phase: fake-quantized INT8 weights, from the best model so far
    qat_seconds = 0.0
    if args.qat_epochs:
        t_qat = time.perf_counter()
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        start_val, _ = accuracy(model, x_val, y_val)
        with qat.fake_quant(model):
            start_snapped_val, _ = accuracy(model, x_val, y_val)
        print(f"qat: start val acc {100 * start_val:.2f}% float, {100 * start_snapped_val:.2f}% "
              f"with nearest-rounded INT8 weights", flush=True)
        qat_info.update(epochs=args.qat_epochs, lr=args.qat_lr, lr_min=args.qat_lr_min,
                        start_val_acc=round(start_val, 5),
                        start_val_acc_snapped=round(start_snapped_val, 5),
                        main_best_val_acc=(round(best["val_acc"], 5) if args.epochs else None),
                        main_best_epoch=(best["epoch"] if args.epochs else None),
                        weights="INT8 per output channel, exactly representable "
                                "(s = max|W_row|/127, W = k*s, |k| <= 127)")
        best = {"val_acc": -1.0, "epoch": -1, "state": None}   # only snapped models qualify
        share, snr = QAT_NOISE if args.noise_aug else (0.0, None)
        opt = torch.optim.AdamW(model.parameters(), lr=args.qat_lr,
                                weight_decay=args.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=args.qat_epochs * steps, eta_min=args.qat_lr_min)
        for qe in range(args.qat_epochs):
            te = time.perf_counter()
            desc = f"qat {qe + 1}/{args.qat_epochs}"
            with qat.fake_quant(model):
                loss, acc = run_epoch(opt, sched, share, snr, desc)
                train_seconds = time.perf_counter() - te
                val_acc, val_loss = accuracy(model, x_val, y_val)   # = the snapped model's
            improved = val_acc > best["val_acc"]
            if improved:
                best.update(val_acc=val_acc, epoch=len(history) + 1,
                            state=qat.snap_state(model, model.state_dict()))
                qat_info.update(best_qat_epoch=qe + 1, val_acc=round(val_acc, 5))
            record(desc, te, train_seconds, loss, acc, val_acc, val_loss, share, snr,
                   sched.get_last_lr()[0], improved, phase="qat", qat_epoch=qe + 1)
            if improved:
                save(final=False)
        qat_seconds = time.perf_counter() - t_qat
        qat_info["wall_seconds"] = round(qat_seconds, 1)
        model.load_state_dict(best["state"])
        worst = max(qat.grid_error(model).values())
        if worst > 1e-3:   # float32 rounding leaves ~1e-5 of a step
            raise NanoMambaError(f"snapped weights are {worst:.3g} steps off the INT8 grid")
        qat_info["max_grid_error_steps"] = float(f"{worst:.3g}")

    save(final=True)
    summary = {**metrics(final=True), "data_seconds": round(data_seconds, 1),
               "loop_seconds": round(loop_seconds, 1), "checkpoint": str(out)}
    if args.qat_epochs:
        summary["qat_seconds"] = round(qat_seconds, 1)
    hist = {"summary": summary, "provenance": provenance, "history": history}
    history_path(out).write_text(json.dumps(hist, indent=1) + "\n")
    what = "snapped INT8-exact model" if args.qat_epochs else "model"
    print(f"best val acc {100 * best['val_acc']:.2f}% at epoch {best['epoch']} ({what}); "
          f"wrote {out} and {history_path(out)}")
    print(f"wall time {summary['train_wall_seconds']:.0f} s (data {data_seconds:.0f} s, "
          f"epochs {loop_seconds:.0f} s" + (f", QAT {qat_seconds:.0f} s" if args.qat_epochs
                                             else "")
          + f"), CPU time {summary['train_cpu_seconds']:.0f} s")
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
                    help=f"model variant: {', '.join(VARIANTS)} (ignored with --init)")
    ap.add_argument("--init", metavar="CKPT",
                    help="start from this checkpoint (its model and weights) instead of a "
                         "random initialisation")
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
                   help="the original used 30 (on 19x more data); 0 with --init and "
                        "--qat-epochs for QAT only")
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
    q = ap.add_argument_group("quantization-aware fine-tuning (after the --epochs)")
    q.add_argument("--qat-epochs", type=int, default=0,
                   help="epochs with fake-quantized INT8 weights (straight-through "
                        "estimator); the saved weights are snapped to the INT8 grid. 0 = off")
    q.add_argument("--qat-lr", type=float, default=QAT_LR, help="QAT learning rate")
    q.add_argument("--qat-lr-min", type=float, default=QAT_LR_MIN,
                   help="end of the QAT cosine schedule")
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
    for name in ("batch_size", "per_word", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.epochs < 0 or args.qat_epochs < 0:
        ap.error("--epochs and --qat-epochs must be >= 0")
    if args.epochs == 0 and not (args.init and args.qat_epochs):
        ap.error("--epochs must be >= 1 (0 only with --init and --qat-epochs)")
    for name in ("lr", "qat_lr"):
        if not (getattr(args, name) > 0 and math.isfinite(getattr(args, name))):
            ap.error(f"--{name.replace('_', '-')} must be a positive number")
    threads = torch.get_num_threads()
    try:
        train(args, argv)
    except NanoMambaError as e:  # including CheckpointError (a bad --init)
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
