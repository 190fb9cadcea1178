#!/usr/bin/env bash
# Issue 17, item 3: realistic degradations. The held-out baseline recipe trained with camera
# effects on its degraded samples (training/configs/lfw_cpu_dlib_student_holdout_camera.yaml,
# ~30 min on 2 cores, continued by running this again), then the baseline and this student
# on the held-out people, the probes degraded by the resize alone and with camera effects
# (lrfr eval --camera: seeded per image, the same faces for both students).
#   bash experiments/holdout_camera.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=experiments/holdout_common.sh
. experiments/holdout_common.sh
CAMERA=runs/lfw-cpu-dlib-student-holdout-camera/last.pt
lrfr train --config training/configs/lfw_cpu_dlib_student_holdout_camera.yaml \
    --set "data.people_file=$SPLIT/people.txt" --resume auto

evaluate plain "$STUDENT"
evaluate camera-student "$CAMERA"
evaluate plain-camera-probes "$STUDENT" --camera
evaluate camera-student-camera-probes "$CAMERA" --camera
lrfr eval compare "$OUT/plain/results.json" "$OUT/camera-student/results.json" \
    "$OUT/plain-camera-probes/results.json" "$OUT/camera-student-camera-probes/results.json" \
    --labels "student,student trained with camera effects,student (probes with camera effects),student trained with camera effects (probes with camera effects)" \
    --out "$RESULTS/compare-camera.md"
cat "$RESULTS/compare-camera.md"
