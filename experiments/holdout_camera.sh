#!/usr/bin/env bash
# Issue 17, item 3: realistic degradations on the probes. The baseline and the student
# trained with camera effects (`bash experiments/holdout_train.sh camera` first) on the
# held-out people, the probes degraded by the resize alone and with camera effects
# (lrfr eval --camera: seeded per image, the same faces for both students).
#   bash experiments/holdout_camera.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=experiments/holdout_common.sh
. experiments/holdout_common.sh
CAMERA=runs/lfw-cpu-dlib-student-holdout-camera/last.pt
evaluate plain "$STUDENT"
evaluate camera "$CAMERA"
evaluate plain-camera-probes "$STUDENT" --camera
evaluate camera-camera-probes "$CAMERA" --camera
lrfr eval compare "$OUT/plain/results.json" "$OUT/camera/results.json" \
    "$OUT/plain-camera-probes/results.json" "$OUT/camera-camera-probes/results.json" \
    --labels "student,student trained with camera effects,student (probes with camera effects),student trained with camera effects (probes with camera effects)" \
    --out "$RESULTS/compare-camera.md"
cat "$RESULTS/compare-camera.md"
