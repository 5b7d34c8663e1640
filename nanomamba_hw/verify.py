"""``python -m nanomamba_hw.verify``: the emitted hardware against the fixed model, clip by clip.

    python -m nanomamba_hw.verify [--ckpt CKPT] [--engine verilator|icarus|sim]
                                  [--clips DIR | --synthetic N] [--json] [--jobs J]

For every clip: the hardware's integers (class index and every logit) against the fixed
model's — bit-exact, or the first differing field and both values — and the fixed model's class
against the float model's. A summary gives the counts; the exit code is 1 when any clip is not
bit-exact. The Verilator model is compiled once per design and cached; where Verilator is not
installed, ``verilator`` falls back to Icarus Verilog (``--engine icarus`` asks for it directly:
same results, over a hundred times slower).

``--synthetic N`` takes N clips of the synthetic corpus's held-out-voice test split: half as
they are, half mixed with one of the five noise types at an SNR from −10 to 20 dB, plus the edge
signals (digital silence, full-scale square wave, DC, impulse, full-scale white noise).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from .audio import float_from_pcm, pcm_from_float
from .checkpoint import load_checkpoint
from .errors import NanoMambaError


def synthetic_clips(n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """N test-split clips (half clean, half noisy) + the edge signals, as int16, with names."""
    from .calib import edge_signals
    from .data import NOISE_TYPES, make_noise, mix_at_snr, speech_source_from_corpus
    from .datasets import resolve_data
    data = resolve_data("synthetic", progress=False)
    ds = data.split("test")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(ds), size=min(n, len(ds)), replace=False))
    speech = speech_source_from_corpus(data.root, seed=seed)
    clips, names = [], []
    for j, i in enumerate(pick):
        x, _ = ds[int(i)]
        name = ds.paths[int(i)] if int(i) < len(ds.paths) else f"silence{int(i)}"
        if j % 2:
            kind = NOISE_TYPES[(j // 2) % len(NOISE_TYPES)]
            snr = float(rng.uniform(-10, 20))
            x = mix_at_snr(x, make_noise(kind, len(x), rng, speech_source=speech), snr)
            name += f" + {kind} {snr:.1f} dB"
        clips.append(pcm_from_float(x))
        names.append(str(name))
    for k, v in edge_signals().items():
        clips.append(v)
        names.append(f"edge:{k}")
    return np.stack(clips), names


def compare_clip(hw: dict, fixed_idx: int, fixed_logits: list[int]) -> str | None:
    """None when bit-exact, else a description of the first differing field."""
    if hw["logits_int"] != fixed_logits:
        k = next(i for i, (a, b) in enumerate(zip(hw["logits_int"], fixed_logits)) if a != b)
        return f"logits[{k}]: hardware {hw['logits_int'][k]}, fixed {fixed_logits[k]}"
    if hw["index"] != fixed_idx:
        return f"index: hardware {hw['index']}, fixed {fixed_idx}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nanomamba_hw.verify", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="checkpoint (default: the shipped model/ checkpoint)")
    ap.add_argument("--engine", choices=("verilator", "icarus", "sim"), default="verilator")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--clips", help="a WAV file or a directory of WAVs")
    src.add_argument("--synthetic", type=int, metavar="N",
                     help="N clips of the synthetic test split (half noisy) + edge signals")
    ap.add_argument("--weights", choices=("int8", "int16"), default="int8")
    ap.add_argument("--lanes", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2,
                    help="parallel Verilator or Icarus runs (default 2)")
    ap.add_argument("--json", action="store_true", help="one JSON object per clip, then a summary")
    ap.add_argument("--record", metavar="FILE",
                    help="also write the summary with the command, date and wall time to FILE "
                         "(docs/verify.json is the one docs/benchmarks.md shows)")
    args = ap.parse_args(argv)
    from .fixed.model import run as fixed_run
    from .predict import resolve_ckpt
    t0 = time.time()
    try:
        ckpt = load_checkpoint(resolve_ckpt(args.ckpt))
        if args.clips:
            from .audio import expand_inputs, load_clip
            files = expand_inputs([args.clips])
            if not files:
                raise NanoMambaError(f"{args.clips}: no WAV files")
            pcm = np.stack([load_clip(f).pcm for f in files])
            names = [str(f) for f in files]
        else:
            pcm, names = synthetic_clips(args.synthetic if args.synthetic is not None else 10)
        from .engines import FixedEngine
        params = FixedEngine(ckpt, weight_bits=8 if args.weights == "int8" else 16).params
        from .engines import ENGINES
        engine = ENGINES[args.engine](ckpt, params, lanes=args.lanes)
    except NanoMambaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    compile_s = time.time() - t0
    # "icarus" when the verilator engine fell back to Icarus Verilog
    label = getattr(engine, "simulator", args.engine)
    label = args.engine if label == args.engine else f"{args.engine} via {label}"
    fixed = fixed_run(params, pcm)
    with torch.no_grad():
        float_idx = ckpt.model(torch.from_numpy(float_from_pcm(pcm))).argmax(-1).numpy()

    chunks = [list(range(i, min(i + 8, len(pcm)))) for i in range(0, len(pcm), 8)]
    results: dict[int, dict] = {}
    t1 = time.time()
    bar = tqdm(total=len(pcm), desc=f"verify ({label})", unit="clip", file=sys.stderr)

    def work(idx):
        out = engine.run(float_from_pcm(pcm[idx]))
        return idx, out

    jobs = max(1, args.jobs) if args.engine in ("verilator", "icarus") else 1
    with ThreadPoolExecutor(jobs) as pool:
        for idx, out in pool.map(work, chunks):
            for i, r in zip(idx, out):
                results[i] = r
            bar.update(len(idx))
    bar.close()
    run_s = time.time() - t1

    n_exact = n_float = 0
    failures = []
    for i, name in enumerate(names):
        hw = results[i]
        diff = compare_clip(hw, int(fixed.index[i]), [int(v) for v in fixed.logits[i]])
        same_float = int(fixed.index[i]) == int(float_idx[i])
        n_exact += diff is None
        n_float += same_float
        if diff is not None:
            failures.append((name, diff))
        if args.json:
            print(json.dumps({"clip": name, "bit_exact": diff is None, "difference": diff,
                              "hw_index": hw["index"], "fixed_index": int(fixed.index[i]),
                              "float_index": int(float_idx[i]), "cycles": hw["cycles"]}))
    summary = {"clips": len(names), "bit_exact": n_exact, "mismatches": len(names) - n_exact,
               "fixed_vs_float_same_class": n_float, "engine": label,
               "checkpoint": ckpt.path, "compile_seconds": round(compile_s, 1),
               "run_seconds": round(run_s, 1),
               "seconds_per_clip": round(run_s / max(len(names), 1), 2)}
    if args.record:
        import datetime
        import os
        import platform
        from pathlib import Path
        record = {"command": "python -m nanomamba_hw.verify " + " ".join(
                      sys.argv[1:] if argv is None else argv),
                  "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                  "wall_seconds": round(time.time() - t0, 1), **summary,
                  "failures": [{"clip": n, "difference": d} for n, d in failures]}
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        Path(args.record).write_text(json.dumps(record, indent=1))
    if args.json:
        print(json.dumps({"summary": summary}))
    else:
        for name, diff in failures[:20]:
            print(f"MISMATCH {name}: {diff}")
        print(f"{n_exact}/{len(names)} clips bit-exact ({label} vs fixed model); "
              f"fixed vs float same class on {n_float}/{len(names)}; "
              f"{summary['seconds_per_clip']} s per clip after {compile_s:.0f} s of setup")
    return 0 if n_exact == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
