#!/usr/bin/env bash
# Few-shot: bash scripts/common/few_shot.sh TRAINER CFG DATASET SHOTS SEED [KEY VALUE ...]
#
# CoOp's published recipe (CoOp's COOP.md and IJCV paper): for TRAINER CoOp, or CLIPAdapter (whose
# released code is run "with CoOp's command"), and a CFG that names a backbone config (rn50, rn101,
# vit_b16, vit_b32, or their _ctxv1 / _learned_ratio variants), the run trains 50 epochs at
# 1 shot (<backbone>_ep50[_ctxv1].yaml), 100 at 2 and 4 shots (<backbone>_ep100[_ctxv1].yaml) and 200
# at 8 and 16 (CFG itself); on ImageNet 50 at every shot count. The run folder keeps CFG's name
# (<cfg>_<shots>shots), so one backbone's runs form one column group of the few-shot table.
# RECIPE=fixed runs CFG as it is at every shot count.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; DATASET=$3; SHOTS=$4; SEED=$5; shift 5

# recipe_config TRAINER CFG DATASET SHOTS: the config the published recipe trains with.
recipe_config() {
    local trainer=$1 cfg=$2 dataset=$3 shots=$4
    if [ "${RECIPE:-published}" = fixed ] || ! [[ "$trainer" =~ ^(CoOp|CLIPAdapter)$ ]] ||
        ! [[ "$cfg" =~ ^(rn50|rn101|vit_b16|vit_b32)(_ctxv1|_learned_ratio)?$ ]]; then
        echo "$cfg"; return
    fi
    local backbone=${BASH_REMATCH[1]} variant=${BASH_REMATCH[2]}
    if [ "$dataset" = imagenet ] || [ "$shots" -le 1 ]; then echo "${backbone}_ep50${variant}"
    elif [ "$shots" -le 4 ]; then echo "${backbone}_ep100${variant}"
    else echo "$cfg"; fi
}

RUN_CFG=$(recipe_config "$TRAINER" "$CFG" "$DATASET" "$SHOTS")
if [ "$RUN_CFG" != "$CFG" ]; then
    echo "CoOp's few-shot recipe (${TRAINER}): $DATASET at $SHOTS shots trains with configs/trainers/$TRAINER/$RUN_CFG.yaml" \
         "(RECIPE=fixed runs $CFG.yaml)"
fi
launch "$TRAINER" "$RUN_CFG" "$DATASET" "$SEED" "${OUTPUT}/fewshot/${DATASET}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}" \
    DATASET.NUM_SHOTS "$SHOTS" "$@"
