#!/usr/bin/env bash
# Evaluate the source-trained checkpoint on another dataset (cross-dataset) or an ImageNet variant
# (domain generalization). bash scripts/common/xd_test.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; DATASET=$3; SEED=$4; shift 4
SHOTS=${SHOTS:-16}
SOURCE=${SOURCE:-imagenet}
CFG_FILE=configs/trainers/${TRAINER}/${CFG}.yaml
MODEL_DIR=${OUTPUT}/${SOURCE}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}
DIR=${OUTPUT}/evaluation/${TRAINER}/${CFG}_${SHOTS}shots/${DATASET}/seed${SEED}
if finished "$DIR"; then
    echo "The results exist at ${DIR} (so skip this job)"; exit 0
fi
LOAD=()
if trains "$TRAINER"; then
    LOAD=(--model-dir "$MODEL_DIR" --load-epoch "${LOADEP:-$(last_epoch "$TRAINER" "$CFG_FILE" "$@")}")
fi
python train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
    --dataset-config-file "configs/datasets/${DATASET}.yaml" --config-file "$CFG_FILE" \
    --output-dir "$DIR" "${LOAD[@]}" --eval-only "$@"
