#!/usr/bin/env bash
# Few-shot: bash scripts/common/few_shot.sh TRAINER CFG DATASET SHOTS SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; DATASET=$3; SHOTS=$4; SEED=$5; shift 5
DIR=${OUTPUT}/fewshot/${DATASET}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}
if finished "$DIR"; then
    echo "The results exist at ${DIR} (so skip this job)"; exit 0
fi
EXTRA=()
trains "$TRAINER" || EXTRA=(--eval-only)
python train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
    --dataset-config-file "configs/datasets/${DATASET}.yaml" \
    --config-file "configs/trainers/${TRAINER}/${CFG}.yaml" \
    --output-dir "$DIR" "${EXTRA[@]}" DATASET.NUM_SHOTS "$SHOTS" "$@"
