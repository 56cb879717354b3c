#!/usr/bin/env bash
# Few-shot: bash scripts/common/few_shot.sh TRAINER CFG DATASET SHOTS SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; DATASET=$3; SHOTS=$4; SEED=$5; shift 5
launch "$TRAINER" "$CFG" "$DATASET" "$SEED" "${OUTPUT}/fewshot/${DATASET}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}" \
    DATASET.NUM_SHOTS "$SHOTS" "$@"
