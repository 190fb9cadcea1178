# Sourced by the held-out experiments (holdout_levers.sh, holdout_camera.sh): the split,
# the folders, and `evaluate NAME CHECKPOINT [OPTIONS]`, one `lrfr eval lfw` on the held-out
# pairs (112/28/14/7 px, both degraded and cross-resolution) and people (identification),
# skipped when its results exist, copied to $RESULTS/NAME.json.
# shellcheck shell=bash disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
LFW=${LFW:-../shared/data/lfw}
SPLIT=$(realpath "${SPLIT:-runs/holdout}")
STUDENT=${STUDENT:-runs/lfw-cpu-dlib-student-holdout/last.pt}
OUT=${OUT:-runs/holdout-levers}
RESULTS=${RESULTS:-results/holdout-levers}
mkdir -p "$OUT" "$RESULTS"

evaluate() {  # $1: name, $2: checkpoint, then extra options
    local name=$1 model=$2
    shift 2
    [ -f "$OUT/$name/results.json" ] || lrfr eval lfw --model "$model" --data "$LFW" \
        --pairs-file "$SPLIT/pairs-heldout.txt" --resolutions 112,28,14,7 --cross-resolution \
        --identification --people-file "$SPLIT/people-heldout.txt" --out "$OUT/$name" \
        --no-progress "$@"
    cp "$OUT/$name/results.json" "$RESULTS/$name.json"
}
