#!/usr/bin/env bash
# Is the bundled model's recipe unchanged by later code? (issue 13: "behaviour unchanged")
# Runs the recipe of experiments/bundled_model.sh at an old commit (default d86d2f5, the
# commit the bundled model 1.0.0 was exported at) and at this checkout, on the same machine:
#   1. one epoch (104 steps) of training/configs/lfw_cpu_dlib_student.yaml from dlib's
#      weights, with the same seed and data; every logged metric of every step and every
#      weight of the checkpoints must be bit-identical;
#   2. the gate chosen on pairsDevTrain (the old commit's experiments/gate.py, this
#      checkout's `lrfr gate`) and the export with thresholds calibrated on pairsDevTrain,
#      both from the SAME student (this checkout's); gate, thresholds and the embeddings of
#      LFW crops at 112..7 px are compared.
# ~25 minutes on 2 cores. Needs the teacher cache (runs/teacher/lfw_peopleDevTrain_dlib.npz,
# see experiments/bundled_model.sh) and a worktree of the old commit (made here).
#
#   bash experiments/recipe_parity.sh             # against d86d2f5
#   OLD=<rev> bash experiments/recipe_parity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
HERE=$(pwd)
OLD=${OLD:-d86d2f5}
LFW=$(realpath "${LFW:-../shared/data/lfw}")
CACHE=$(realpath "${CACHE:-runs/teacher/lfw_peopleDevTrain_dlib.npz}")
OUT=$(realpath -m "${OUT:-runs/recipe-parity}")
TREE=${TREE:-/tmp/lrfr-recipe-$OLD}
mkdir -p "$OUT"
[ -d "$TREE" ] || git worktree add -f "$TREE" "$OLD" >/dev/null

train() {  # $1: repository, $2: output folder
    (cd "$1" && PYTHONPATH="$1" python -m lrfr.cli train \
        --config training/configs/lfw_cpu_dlib_student.yaml --out "$2" \
        --set "data.root=$LFW" --set "validation.lfw_dir=$LFW" --set "distill.cache=$CACHE" \
        --set engine.progress=false --set schedule.epochs=1 --set validation.at_start=false \
        --set engine.log_every=1 --set engine.checkpoint_every=1000)
}
[ -f "$OUT/old/last.pt" ] || train "$TREE" "$OUT/old"
[ -f "$OUT/new/last.pt" ] || train "$HERE" "$OUT/new"

export_args=(--calibrate-on "$LFW" --pairs-file pairsDevTrain.txt --name parity --version 1)
[ -f "$OUT/old-gated.pt" ] || (cd "$TREE" && PYTHONPATH="$TREE" python experiments/gate.py \
    --student "$OUT/new/last.pt" --out "$OUT/old-gated.pt" --lfw "$LFW" > "$OUT/old-gate.md")
[ -f "$OUT/old.onnx" ] || (cd "$TREE" && PYTHONPATH="$TREE" python -m lrfr.cli export \
    "$OUT/old-gated.pt" --out "$OUT/old.onnx" "${export_args[@]}")
[ -f "$OUT/new-gated.pt" ] || lrfr gate --student "$OUT/new/last.pt" --out "$OUT/new-gated.pt" \
    --lfw "$LFW" --recipe training/configs/lfw_cpu_dlib_student.yaml > "$OUT/new-gate.md"
[ -f "$OUT/new.onnx" ] || lrfr export "$OUT/new-gated.pt" --out "$OUT/new.onnx" "${export_args[@]}"

python experiments/recipe_parity.py --out "$OUT" --lfw "$LFW" | tee "$OUT/parity.md"
