#!/usr/bin/env bash
# Issue 17, item 3: levers on top of Octuplet + distillation (2.0.0's recipe), on the
# held-out split: the distillation weight doubled (w40), feature hints beside it (hints),
# twice and four times the schedule (long, longer) and a triplet against the teacher's
# descriptors (triplet, and at weight 5: triplet5); 6 epochs with the distillation
# weight lowered to 5 and 0 (longw5, longw0: for the pair's space, docs/training.md);
# each fine-tuned from the held-out baseline student
# (about 5-11 min each on 2 cores, 20 for longer, resumable by running this again), then measured on the
# held-out people alone and through the gate (dlib for q >= 1.0.0's 4.58, as shipped),
# beside plain Octuplet + distillation. Needs the split, the baseline and its Octuplet run
# (experiments/holdout_levers.sh and holdout_finetune.sh say how).
#   bash experiments/holdout_octuplet_levers.sh [LEVER...]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=experiments/holdout_common.sh
. experiments/holdout_common.sh
GATE=4.579539895057678  # 1.0.0's gate, kept by 2.0.0 (docs/training.md)
GATED=${GATED:-runs/holdout-gated}
levers=("$@")
[ ${#levers[@]} -gt 0 ] || levers=(w40 hints long triplet longer triplet5 longw5 longw0)

gated() {  # $1: name, $2: student checkpoint
    mkdir -p "$GATED/$1"
    [ -f "$GATED/$1/gated.pt" ] || lrfr gate --student "$2" --out "$GATED/$1/gated.pt" \
        --lfw "$LFW" --threshold "$GATE" --chosen-on "1.0.0's gate (pairsDevTrain)"
    evaluate "gated-$1" "$GATED/$1/gated.pt"
}

evaluate octuplet runs/lfw-cpu-dlib-student-holdout-octuplet/last.pt
gated octuplet runs/lfw-cpu-dlib-student-holdout-octuplet/last.pt
students=("$OUT/octuplet/results.json")
gates=("$OUT/gated-octuplet/results.json")
labels="octuplet+distill"
for lever in "${levers[@]}"; do
    run=runs/lfw-cpu-dlib-student-holdout-octuplet-$lever/last.pt
    lrfr finetune --config "training/configs/lfw_cpu_dlib_student_holdout_octuplet_$lever.yaml" \
        --set "data.people_file=$SPLIT/people.txt" --resume auto
    evaluate "octuplet-$lever" "$run"
    gated "octuplet-$lever" "$run"
    students+=("$OUT/octuplet-$lever/results.json")
    gates+=("$OUT/gated-octuplet-$lever/results.json")
    labels="$labels,octuplet+distill $lever"
done
lrfr eval compare "${students[@]}" --labels "$labels" --out "$RESULTS/compare-octuplet.md"
lrfr eval compare "${gates[@]}" --labels "$labels" --out "$RESULTS/compare-octuplet-gated.md"
cat "$RESULTS/compare-octuplet.md" "$RESULTS/compare-octuplet-gated.md"
