#!/usr/bin/env bash
# The main job on a fresh machine: install, write the demo dataset, run stage 1 (alpha) and
# stage 2 (beta x 3 model seeds, the fewest that UDR, the default criterion, compares) with 2
# local CPU workers and embedded SQLite storage, export both stages and print the
# recommendations (UDR's and the guide's, with their MIG); then put the recommended model to work:
# export its bundle and encode a second synthetic session it never saw (another data seed),
# printing its label R^2 and how well its unsupervised latents track the true jaw and chest there.
# Everything lands in ./demo. The demo uses only what the plain install provides (npz, csv and
# BehaveNet output; NWB output needs the poses extra).
#
#   bash scripts/demo.sh [--quick] [STAGE OPTIONS...]
#
# --quick: the same install and commands at tiny sizes (2 alphas, 2 betas x 3 seeds, 2 epochs,
# small sessions) in ./demo-quick, in a few minutes: what CI runs on a clean clone before the test
# install adds the extras, so that a package the demo needs and its install lacks fails CI.
# Other arguments go to both stage commands (e.g. --workers 4).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=demo
SETS=()
SYNTH=(--trials 30 --frames 100)
UNSEEN=(--trials 10 --frames 100)
if [ "${1:-}" = "--quick" ]; then
  shift
  OUT=demo-quick
  SETS=(--set "data.path=$OUT/demo.h5" --set "study.runs_dir=$OUT/runs" --set train.max_epochs=2
    --set loss.anneal_epochs=1 --set "stage1.alphas=[100.0, 1000.0]" --set "stage2.betas=[1.0, 10.0]")
  SYNTH=(--trials 10 --frames 20)
  UNSEEN=(--trials 10 --frames 20)
fi
bash scripts/install.sh here >/dev/null # the demo runs here: the build for this machine
export TZ=UTC PSVAE_OPT_STORAGE="sqlite:///$PWD/$OUT/studies.db"
PSVAE=.venv/bin/psvae-opt
CONFIG=(--config studies/demo.toml "${SETS[@]}")
mkdir -p "$OUT"
$PSVAE data synth "$OUT/demo.h5" --size 64 "${SYNTH[@]}" --seed 0 --if-missing
$PSVAE stage1 "${CONFIG[@]}" --workers 2 "$@"
$PSVAE stage2 "${CONFIG[@]}" --seeds 3 --workers 2 "$@"
$PSVAE export "${CONFIG[@]}" --stage 1 --out "$OUT/export/stage1"
$PSVAE export "${CONFIG[@]}" --stage 2 --out "$OUT/export/stage2"
echo
$PSVAE status "${CONFIG[@]}"
echo "exports: $OUT/export/stage1 and $OUT/export/stage2 (pareto.csv, pareto.json, pareto.html, seeds_summary.csv)"
echo
# The chosen model at work: its bundle, and a session of another data seed it never trained on
$PSVAE model export "${CONFIG[@]}" --stage 2 --out "$OUT/model"
$PSVAE data synth "$OUT/unseen.h5" --size 64 "${UNSEEN[@]}" --seed 1 --if-missing
$PSVAE encode --model "$OUT/model" --out "$OUT/encoded" "$OUT/unseen.h5" --format npz,csv,behavenet --no-progress
echo "model bundle: $OUT/model (model_card.md); the unseen session encoded: $OUT/encoded"
