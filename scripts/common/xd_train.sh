#!/usr/bin/env bash
# Cross-dataset / domain generalization source run: all ImageNet classes, 16 shots.
# bash scripts/common/xd_train.sh TRAINER CFG SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; SEED=$3; shift 3
SHOTS=${SHOTS:-16}
SOURCE=${SOURCE:-imagenet}
launch "$TRAINER" "$CFG" "$SOURCE" "$SEED" "${OUTPUT}/${SOURCE}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}" \
    DATASET.NUM_SHOTS "$SHOTS" "$@"
