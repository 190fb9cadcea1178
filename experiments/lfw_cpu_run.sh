#!/usr/bin/env bash
# The real CPU run of docs/training.md (issue 4, item 7): train IR-18 at 1/8 width on
# LFW peopleDevTrain with ArcFace and with Approach 2 (Laplacian-adaptive margin) for a
# bounded time each, export both to ONNX (thresholds calibrated on pairsDevTest), and
# evaluate on pairsDevTest (LFW View 1, identity-disjoint from peopleDevTrain) at
# 112/56/28/14/7 px with the evaluation module. Not a test: it takes about 30 minutes.
#
#   bash experiments/lfw_cpu_run.sh            # LFW at ../shared/data/lfw
#   LFW=/data/lfw MINUTES=13 bash experiments/lfw_cpu_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
LFW=${LFW:-../shared/data/lfw}
OUT=${OUT:-runs/lfw-cpu-experiment}
MINUTES=${MINUTES:-14}
RESULTS=${RESULTS:-results/lfw_cpu}
mkdir -p "$OUT" "$RESULTS"

for head in arcface approach2; do
    run="$OUT/$head"
    lrfr train --config "training/configs/lfw_cpu_$head.yaml" --out "$run" \
        --set "data.root=$LFW" --set "validation.lfw_dir=$LFW" \
        --set "engine.max_minutes=$MINUTES" --set engine.progress=false
    lrfr export "$run/last.pt" --out "$run/model.onnx" --calibrate-on "$LFW" --view 1 \
        --name "lrfr-lfw-cpu-$head"
    lrfr eval lfw --model "$run/model.onnx" --data "$LFW" --view 1 \
        --resolutions 112,56,28,14,7 --out "$run/eval" --no-progress
    mkdir -p "$RESULTS/$head"
    cp "$run/validation.jsonl" "$run/metrics.jsonl" "$run/model.json" "$run/config.yaml" \
        "$run/eval/results.json" "$RESULTS/$head/"
done
# the floor every trained model must beat: 8x8 colour thumbnails (training.eval.baseline)
python -c "from training.eval.baseline import build_pixel_baseline as b; b('$OUT/pixels.onnx')"
lrfr eval lfw --model "$OUT/pixels.onnx" --data "$LFW" --view 1 \
    --resolutions 112,56,28,14,7 --out "$OUT/pixels-eval" --no-progress
cp "$OUT/pixels-eval/results.json" "$RESULTS/baseline_pixels.json"
lrfr eval compare "$OUT/arcface/eval/results.json" "$OUT/approach2/eval/results.json" \
    "$OUT/pixels-eval/results.json" --labels arcface,approach2,pixels --out "$RESULTS/compare.md"
python experiments/summarise.py "$RESULTS" > "$RESULTS/summary.md"
cat "$RESULTS/summary.md"
