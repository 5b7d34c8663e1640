#!/usr/bin/env bash
# Set up nanomamba_hw in ./.venv (idempotent): the CPU build of PyTorch first, because a bare
# "torch" requirement would pull a multi-GB CUDA build, then the package with its test tools.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
echo "nanomamba_hw installed in .venv"
