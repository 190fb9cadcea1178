#!/usr/bin/env bash
# Issue 17, item 3: the deck's fine-tuning methods on the held-out baseline student, each
# with the distillation term, against the same student continued for the same schedule by
# its own recipe (the control). Needs the split and the baseline (experiments/holdout_levers.sh
# says how); then the three runs one after another (about 5-10 min each on 2 cores), each
# continued by running this again, and holdout_levers.sh measures them on the held-out people.
#   bash experiments/holdout_finetune.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
PEOPLE=$(realpath "${SPLIT:-runs/holdout}")/people.txt
for lever in more octuplet derivenet; do
    config=training/configs/lfw_cpu_dlib_student_holdout_$lever.yaml
    command=train
    [ "$lever" = more ] || command=finetune
    lrfr "$command" --config "$config" --set "data.people_file=$PEOPLE" --resume auto
done
bash experiments/holdout_levers.sh
