#!/usr/bin/env bash
# Base-to-new, evaluation on the new classes from the base-trained checkpoint (its last epoch,
# read from the config: no LOADEP to edit). bash scripts/common/base2new_test.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; DATASET=$3; SEED=$4; shift 4
SHOTS=${SHOTS:-16}
SUB=${SUB:-new}
CFG_FILE=configs/trainers/${TRAINER}/${CFG}.yaml
COMMON_DIR=${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}
MODEL_DIR=${OUTPUT}/base2new/train_base/${COMMON_DIR}
DIR=${OUTPUT}/base2new/test_${SUB}/${COMMON_DIR}
if finished "$DIR"; then
    echo "The results exist at ${DIR} (so skip this job)"; exit 0
fi
LOAD=()
if trains "$TRAINER"; then
    LOAD=(--model-dir "$MODEL_DIR" --load-epoch "${LOADEP:-$(last_epoch "$TRAINER" "$CFG_FILE" "$@")}")
fi
python train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
    --dataset-config-file "configs/datasets/${DATASET}.yaml" --config-file "$CFG_FILE" \
    --output-dir "$DIR" "${LOAD[@]}" --eval-only \
    DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES "$SUB" "$@"
