#!/usr/bin/env bash
# Issue 17, item 3: levers measured on people the student never saw (the held-out part of
# peopleDevTrain, docs/evaluation.md), never on DevTest. Needs the split and the held-out
# baseline student:
#   python -m training.eval.holdout --lfw ../shared/data/lfw --out runs/holdout
#   lrfr train --config training/configs/lfw_cpu_dlib_student_holdout.yaml \
#       --set data.people_file=$PWD/runs/holdout/people.txt
# Then, per lever, one `lrfr eval lfw` on the held-out pairs (112/28/14/7 px, both degraded
# and cross-resolution) and people (identification), and one compare table. Levers so far:
# flip test-time averaging (--flip). ~5 minutes per evaluation on 2 cores.
#   bash experiments/holdout_levers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
LFW=${LFW:-../shared/data/lfw}
SPLIT=$(realpath "${SPLIT:-runs/holdout}")
STUDENT=${STUDENT:-runs/lfw-cpu-dlib-student-holdout/last.pt}
OUT=${OUT:-runs/holdout-levers}
RESULTS=${RESULTS:-results/holdout-levers}
mkdir -p "$OUT" "$RESULTS"

evaluate() {  # $1: name, then extra options
    local name=$1
    shift
    [ -f "$OUT/$name/results.json" ] || lrfr eval lfw --model "$STUDENT" --data "$LFW" \
        --pairs-file "$SPLIT/pairs-heldout.txt" --resolutions 112,28,14,7 --cross-resolution \
        --identification --people-file "$SPLIT/people-heldout.txt" --out "$OUT/$name" \
        --no-progress "$@"
    cp "$OUT/$name/results.json" "$RESULTS/$name.json"
}
evaluate plain
evaluate flip --flip
lrfr eval compare "$OUT/plain/results.json" "$OUT/flip/results.json" \
    --labels "student (held-out run),student + flip averaging" --out "$RESULTS/compare.md"
cat "$RESULTS/compare.md"
