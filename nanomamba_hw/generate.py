"""``python -m nanomamba_hw.generate``: refresh ``generated/``, the Verilog of the accelerator for
the shipped default checkpoint (``model/``), so users without Python have the design, and so a
test (tests/test_generated.py) can tell when the checked-in Verilog no longer matches the code.

The Verilog is generated from the checkpoint's shipped fixed-point artefact
(``model/<name>.int8.json``) with one MAC lane: exactly what ``build --board arty_a7`` emits as
``nanomamba_accel.v`` for the default checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "generated"
VERILOG = GENERATED / "nanomamba_accel.v"


def default_verilog() -> str:
    """The accelerator Verilog for the default checkpoint, from its shipped artefact."""
    from .build import accelerator_verilog
    from .checkpoint import load_checkpoint
    from .fixed.model import FixedParams
    from .hw.accelerator import Accelerator
    from .predict import DEFAULT_CKPT
    from .quantize import artefact_beside
    artefact = artefact_beside(DEFAULT_CKPT, 8)
    params = FixedParams.load(artefact)
    from .quantize import _ckpt_hash
    if params.provenance.get("weights_hash") != _ckpt_hash(load_checkpoint(DEFAULT_CKPT)):
        raise SystemExit(f"{artefact} was not made from {DEFAULT_CKPT}: rerun "
                         "python -m nanomamba_hw.quantize --out " + str(artefact))
    return accelerator_verilog(Accelerator(params))


def main() -> int:
    GENERATED.mkdir(exist_ok=True)
    VERILOG.write_text(default_verilog())
    print(f"wrote {VERILOG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
