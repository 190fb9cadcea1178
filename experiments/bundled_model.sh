#!/usr/bin/env bash
# The bundled model (docs/model-card.md), end to end on a CPU:
#   1. the teacher cache: dlib's descriptors of the sharp peopleDevTrain images
#      (skipped when the cache exists; ~13 minutes);
#   2. training: training/configs/lfw_cpu_dlib_student.yaml (dlib-resnet29 started from
#      dlib's released weights, cross-resolution batches, distillation towards the
#      teacher's sharp descriptors, Approach-2 head); ~70 minutes on 2 cores;
#   3. the quality gate (lrfr gate, chosen on pairsDevTrain): dlib's released
#      network for sharp crops, the student below the gate; export to ONNX with
#      thresholds calibrated on LFW pairsDevTrain;
#   4. evaluation on LFW pairsDevTest (both degraded + cross-resolution) of this model
#      AND of dlib's own model (with its own alignment), by the same command, then the
#      side-by-side table; ORL identification for reference.
# Needs the train-teacher extra (pip install -e '.[train,train-teacher]').
#
#   bash experiments/bundled_model.sh                 # all steps
#   TRAIN=0 bash experiments/bundled_model.sh         # steps 3-4 on an existing run
#   EVAL_DLIB=0 ...                                   # skip dlib's evaluation (~20 min)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
LFW=${LFW:-../shared/data/lfw}
ORL=${ORL:-../shared/data/orl}
RUN=${RUN:-runs/lfw-cpu-dlib-student}
CACHE=${CACHE:-runs/teacher/lfw_peopleDevTrain_dlib.npz}
CARD=${CARD:-runs/card}
NAME=${NAME:-lrfr-lr-dlib-resnet29-gated}
VERSION=${VERSION:-1.0.0}
RESULTS=${RESULTS:-results/dlib-student}
TRAIN=${TRAIN:-1}
EVAL_DLIB=${EVAL_DLIB:-1}
mkdir -p "$CARD" "$RESULTS"

if [ "$TRAIN" = 1 ]; then
    [ -f "$CACHE" ] || lrfr teacher-cache --data "$LFW" --people peopleDevTrain.txt \
        --min-images 2 --out "$CACHE"
    lrfr train --config training/configs/lfw_cpu_dlib_student.yaml --out "$RUN" \
        --set "data.root=$LFW" --set "validation.lfw_dir=$LFW" \
        --set "distill.cache=$CACHE" --set engine.progress=false
fi

lrfr gate --student "$RUN/last.pt" --out "$CARD/gated.pt" --lfw "$LFW" \
    --recipe training/configs/lfw_cpu_dlib_student.yaml \
    | tee "$CARD/gate.md"
lrfr export "$CARD/gated.pt" --out "$CARD/model.onnx" --calibrate-on "$LFW" \
    --pairs-file pairsDevTrain.txt --name "$NAME" --version "$VERSION" \
    --training-data "LFW peopleDevTrain (1,184 people with >= 2 images, 6,671 images) fine-tuning of dlib_face_recognition_resnet_model_v1 (public domain); gate chosen on 600 pairsDevTrain pairs"

evaluate() {  # $1: model, $2: output folder
    lrfr eval lfw --model "$1" --data "$LFW" --view 1 --resolutions 112,56,28,14,7 \
        --cross-resolution --out "$2" --no-progress
}
evaluate "$CARD/model.onnx" "$CARD/ours"
columns=("$CARD/ours/results.json")
labels="$NAME"
if [ "$EVAL_DLIB" = 1 ]; then
    evaluate dlib "$CARD/dlib"
    columns+=("$CARD/dlib/results.json")
    labels="$labels,dlib-resnet (face_recognition)"
fi
lrfr eval compare "${columns[@]}" --labels "$labels" --out "$RESULTS/compare.md"
if [ -d "$ORL" ]; then
    lrfr eval folder --model "$CARD/model.onnx" --data "$ORL" -k 1 \
        --resolutions 112,28,14,7 --out "$CARD/orl" --no-progress
    cp "$CARD/orl/results.json" "$RESULTS/orl.json"
fi
cp "$CARD/ours/results.json" "$RESULTS/ours.json"
[ "$EVAL_DLIB" = 1 ] && cp "$CARD/dlib/results.json" "$RESULTS/dlib.json"
cp "$RUN/validation.jsonl" "$RUN/config.yaml" "$CARD/model.json" "$CARD/gate.md" "$RESULTS/"
echo "model: $CARD/model.onnx (copy it with its .json to models/bundled/lrfr.{onnx,json})"
