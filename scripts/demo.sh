#!/usr/bin/env bash
# The main job on a fresh machine: install, write the demo dataset, run stage 1 (alpha) and
# stage 2 (beta x 3 model seeds, the fewest that UDR, the default criterion, compares) with 2
# local CPU workers and embedded SQLite storage, export both stages and print the
# recommendations (UDR's and the guide's, with their MIG); then put the recommended model to work: export
# its bundle and encode a second synthetic session it never saw (another data seed), printing
# its label R^2 and how well its unsupervised latents track the true jaw and chest there.
# Everything lands in ./demo (12 minutes on a 2-core CPU). Extra arguments go to both stage
# commands (e.g. --workers 4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh here >/dev/null  # the demo runs here: the build for this machine
export TZ=UTC PSVAE_OPT_STORAGE="sqlite:///$PWD/demo/studies.db"
PSVAE=.venv/bin/psvae-opt
CONFIG=studies/demo.toml
mkdir -p demo
[ -f demo/demo.h5 ] || $PSVAE data synth demo/demo.h5 --size 64 --trials 30 --frames 100 --seed 0
$PSVAE stage1 --config "$CONFIG" --workers 2 "$@"
$PSVAE stage2 --config "$CONFIG" --seeds 3 --workers 2 "$@"
$PSVAE export --config "$CONFIG" --stage 1 --out demo/export/stage1
$PSVAE export --config "$CONFIG" --stage 2 --out demo/export/stage2
echo
$PSVAE status --config "$CONFIG"
echo "exports: demo/export/stage1 and demo/export/stage2 (pareto.csv, pareto.json, pareto.html, seeds_summary.csv)"
echo
# The chosen model at work: its bundle, and a session of another data seed it never trained on
$PSVAE model export --config "$CONFIG" --stage 2 --out demo/model
$PSVAE data synth demo/unseen.h5 --size 64 --trials 10 --frames 100 --seed 1 --if-missing
$PSVAE encode --model demo/model --out demo/encoded demo/unseen.h5 --format npz,csv,behavenet,nwb --no-progress
echo "model bundle: demo/model (model_card.md); the unseen session encoded: demo/encoded"
