#!/usr/bin/env bash
# Run the test suite on a fresh machine: Python packages, PostgreSQL and Chromium are
# installed first. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
bash scripts/system-deps.sh
export TZ=UTC
exec .venv/bin/python -m pytest "$@"
