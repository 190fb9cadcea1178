#!/usr/bin/env bash
# Issue 17, item 3: levers measured on people the student never saw (the held-out part of
# peopleDevTrain, docs/evaluation.md), never on DevTest. Needs the split and the held-out
# baseline student:
#   python -m training.eval.holdout --lfw ../shared/data/lfw --out runs/holdout
#   lrfr train --config training/configs/lfw_cpu_dlib_student_holdout.yaml \
#       --set data.people_file=$PWD/runs/holdout/people.txt
# Then, per lever, one `lrfr eval lfw` on the held-out pairs (112/28/14/7 px, both degraded
# and cross-resolution) and people (identification), and one compare table. Levers so far:
# flip test-time averaging (--flip); a student of the 7-14 px band
# (training/configs/lfw_cpu_dlib_student_holdout_band7_14.yaml, evaluated when its run
# exists); Octuplet and DeriveNet with distillation and their control
# (experiments/holdout_finetune.sh); camera effects and feature hints in training
# (experiments/holdout_train.sh); each evaluated when its run exists. About a minute per
# evaluation on 2 cores.
#   bash experiments/holdout_levers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=experiments/holdout_common.sh
. experiments/holdout_common.sh
BAND=${BAND:-runs/lfw-cpu-dlib-student-holdout-band7-14/last.pt}

evaluate plain "$STUDENT"
evaluate flip "$STUDENT" --flip
columns=("$OUT/plain/results.json" "$OUT/flip/results.json")
labels="student (held-out run),student + flip averaging"
if [ -f "$BAND" ]; then
    evaluate band7-14 "$BAND"
    columns+=("$OUT/band7-14/results.json")
    labels="$labels,student of the 7-14 px band"
fi
# holdout_finetune.sh: the fine-tunings with distillation and their control;
# holdout_train.sh: recipes of their own
for lever in more octuplet derivenet camera hints; do
    run=runs/lfw-cpu-dlib-student-holdout-$lever/last.pt
    [ -f "$run" ] || continue
    evaluate "$lever" "$run"
    columns+=("$OUT/$lever/results.json")
    case $lever in
        more) labels="$labels,student continued (control)" ;;
        camera) labels="$labels,student trained with camera effects" ;;
        hints) labels="$labels,student with feature hints" ;;
        *) labels="$labels,student + $lever + distillation" ;;
    esac
done
lrfr eval compare "${columns[@]}" --labels "$labels" --out "$RESULTS/compare.md"
cat "$RESULTS/compare.md"
