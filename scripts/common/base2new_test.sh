#!/usr/bin/env bash
# Base-to-new, evaluation on the new classes (SUB=base: on the base classes) from the base-trained
# checkpoint's last epoch, read from the config (no LOADEP to edit).
# bash scripts/common/base2new_test.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; DATASET=$3; SEED=$4; shift 4
SHOTS=${SHOTS:-16}
SUB=${SUB:-new}
COMMON_DIR=${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}
launch_eval "$TRAINER" "$CFG" "$DATASET" "$SEED" "${OUTPUT}/base2new/test_${SUB}/${COMMON_DIR}" \
    "${OUTPUT}/base2new/train_base/${COMMON_DIR}" DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES "$SUB" "$@"
