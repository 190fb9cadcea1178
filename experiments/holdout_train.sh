#!/usr/bin/env bash
# Issue 17, item 3: trains held-out levers that are recipes of their own
# (training/configs/lfw_cpu_dlib_student_holdout_LEVER.yaml, ~30 min each on 2 cores, each
# continued by running this again), then measures every lever that has a run
# (holdout_levers.sh).
#   bash experiments/holdout_train.sh camera hints
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=experiments/holdout_common.sh
. experiments/holdout_common.sh
for lever in "$@"; do
    lrfr train --config "training/configs/lfw_cpu_dlib_student_holdout_$lever.yaml" \
        --set "data.people_file=$SPLIT/people.txt" --resume auto
done
bash experiments/holdout_levers.sh
