#!/usr/bin/env bash
# Cross-dataset / domain generalization source run: all ImageNet classes, 16 shots.
# bash scripts/common/xd_train.sh TRAINER CFG SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; SEED=$3; shift 3
SHOTS=${SHOTS:-16}
SOURCE=${SOURCE:-imagenet}
DIR=${OUTPUT}/${SOURCE}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}
if finished "$DIR"; then
    echo "The results exist at ${DIR} (so skip this job)"; exit 0
fi
EXTRA=()
trains "$TRAINER" || EXTRA=(--eval-only)
python train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
    --dataset-config-file "configs/datasets/${SOURCE}.yaml" \
    --config-file "configs/trainers/${TRAINER}/${CFG}.yaml" \
    --output-dir "$DIR" "${EXTRA[@]}" DATASET.NUM_SHOTS "$SHOTS" "$@"
