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
# Icarus Verilog: the simulator the verilator engine falls back to where Verilator is unavailable
# (optional: everything else works without it). Installed only as root with apt-get.
if ! command -v iverilog >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
        && DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iverilog >/dev/null; then
        echo "Icarus Verilog installed ($(iverilog -V 2>/dev/null | head -n 1))"
    else
        echo "Icarus Verilog (optional fallback simulator) not installed: as root, apt-get install iverilog"
    fi
fi
echo "nanomamba_hw installed in .venv"
