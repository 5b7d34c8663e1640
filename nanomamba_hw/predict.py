"""``python -m nanomamba_hw.predict``: classify WAV files with any engine.

One line per file (or, with ``--json``, one JSON object per line:
``{"file", "index", "label", "logits"}`` plus engine extras such as ``logits_int``).
Conversions (resampling, channel mix-down, length) are reported on stderr; an unreadable file
is reported and skipped, and the exit code is 1 at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .audio import expand_inputs, load_clip
from .checkpoint import load_checkpoint
from .engines import engine_names, make_engine
from .errors import AudioError, NanoMambaError

# The shipped default checkpoint (model/README.md); present once the project has trained one.
DEFAULT_CKPT = Path(__file__).resolve().parent.parent / "model" / "nanomamba-tiny-dualpcen.pt"


def resolve_ckpt(arg: str | None) -> str:
    """The checkpoint to use: the argument, else the shipped default."""
    if arg:
        return arg
    if DEFAULT_CKPT.exists():
        return str(DEFAULT_CKPT)
    raise NanoMambaError(f"no --ckpt given and no default checkpoint at {DEFAULT_CKPT}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m nanomamba_hw.predict",
                                 description="Classify one-second keyword clips (WAV files or "
                                             "directories of them).")
    ap.add_argument("wavs", nargs="+", metavar="WAV", help="WAV files, or directories (every *.wav)")
    ap.add_argument("--ckpt", help="checkpoint (ours or a published NanoMamba one); "
                                   "default: the shipped model/ checkpoint")
    ap.add_argument("--engine", default="float", help=f"inference engine: {', '.join(engine_names())}")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ckpt = load_checkpoint(resolve_ckpt(args.ckpt))
        engine = make_engine(args.engine, ckpt)
    except NanoMambaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    status = 0
    paths = expand_inputs(args.wavs)
    if not paths:
        print("error: no WAV files found in the arguments", file=sys.stderr)
        return 1
    clips = []
    for p in paths:
        try:
            clip = load_clip(p)
        except AudioError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        for note in clip.notes:
            print(f"note: {p}: {note}", file=sys.stderr)
        clips.append(clip)
    if clips:
        results = engine.run(np.stack([c.samples for c in clips]))
        names = ckpt.class_names
        for clip, res in zip(clips, results):
            label = names[res["index"]]
            if args.json:
                print(json.dumps({"file": clip.path, "index": res["index"], "label": label,
                                  **{k: v for k, v in res.items() if k != "index"}}), flush=True)
            else:
                top = sorted(range(len(res["logits"])), key=lambda i: -res["logits"][i])[:2]
                margin = res["logits"][top[0]] - res["logits"][top[1]]
                print(f"{clip.path}\t{label}\t(class {res['index']}, margin {margin:.2f} over "
                      f"{names[top[1]]})", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
