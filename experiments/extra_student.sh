#!/usr/bin/env bash
# Issue 17's long run: the bundled model's recipe with 18,524 unlabelled faces
# (faces-extra) in every batch (training/configs/lfw_cpu_dlib_student_extra.yaml).
#   1. teacher caches: dlib's descriptors of the sharp peopleDevTrain images (~16 min)
#      and of the faces-extra crops as training loads them (UTKFace borders repeated;
#      ~45 min on one core, both resumable);
#   2. training, resumable: the same command continues RUN/last.pt; after a restart
#      without RUN it continues from the committed slim checkpoint RESUME_FROM.
# Needs the train-teacher extra (pip install -e '.[train,train-teacher]').
#
#   bash experiments/extra_student.sh                       # start or continue
#   MINUTES=120 bash experiments/extra_student.sh           # stop after 2 h (checkpoint)
#   SOURCES=aaf bash experiments/extra_student.sh           # without UTKFace (own RUN)
# When a session must stop mid-run, commit where to resume from:
#   lrfr slim-checkpoint RUN/last.pt checkpoints/lfw-cpu-dlib-student-extra.pt
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
LFW=${LFW:-../shared/data/lfw}
EXTRA=${EXTRA:-../shared/data/faces-extra}
SOURCES=${SOURCES:-}
NAME=lfw-cpu-dlib-student-extra${SOURCES:+-$SOURCES}
RUN=${RUN:-runs/$NAME}
RESUME_FROM=${RESUME_FROM:-checkpoints/$NAME.pt}
LFW_CACHE=${LFW_CACHE:-runs/teacher/lfw_peopleDevTrain_dlib.npz}
EXTRA_CACHE=${EXTRA_CACHE:-runs/teacher/faces_extra_dlib.npz}
MINUTES=${MINUTES:-null}

# both caches describe only what they lack: nothing once built
lrfr teacher-cache --data "$LFW" --people peopleDevTrain.txt --min-images 2 \
    --out "$LFW_CACHE" --no-progress
lrfr teacher-cache --data "$EXTRA" --kind unlabelled --out "$EXTRA_CACHE" --no-progress \
    ${SOURCES:+--sources "$SOURCES"}

resume=()
if [ ! -f "$RUN/last.pt" ] && [ -f "$RESUME_FROM" ]; then
    resume=(--resume "$RESUME_FROM")
fi
sources=()
[ -n "$SOURCES" ] && sources=(--set "data.unlabelled.sources=[$SOURCES]")
lrfr train --config training/configs/lfw_cpu_dlib_student_extra.yaml --out "$RUN" \
    "${resume[@]}" "${sources[@]}" \
    --set "data.root=$LFW" --set "validation.lfw_dir=$LFW" \
    --set "data.unlabelled.root=$EXTRA" --set "data.unlabelled.cache=$EXTRA_CACHE" \
    --set "distill.cache=$LFW_CACHE" --set engine.progress=false \
    --set "engine.max_minutes=$MINUTES"
