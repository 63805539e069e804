#!/usr/bin/env bash
# Install psvae-opt into ./.venv (idempotent). Torch is pinned first so that pip never swaps
# in a different build: on a machine with a GPU, pip's default torch wheel carries CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q -c constraints.txt torch
fi
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
.venv/bin/psvae-opt --version
