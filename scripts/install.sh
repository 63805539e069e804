#!/usr/bin/env bash
# Install psvae-opt into ./.venv (idempotent); `install.sh test` adds the test tools.
# Torch is pinned first so that pip never swaps in another build (pip's default torch wheel
# for Linux carries CUDA, which is what a GPU machine wants).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -c "import ensurepip" 2>/dev/null; then  # Debian/Ubuntu split venv out
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing python3-venv"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q -c constraints.txt torch
fi
target="."
[ "${1:-}" = "test" ] && target=".[test]"
.venv/bin/python -m pip install -q -c constraints.txt -e "$target"
.venv/bin/psvae-opt --version
