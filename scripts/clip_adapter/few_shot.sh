#!/usr/bin/env bash
# bash scripts/clip_adapter/few_shot.sh DATASET [KEY VALUE ...]: 1/2/4/8/16 shots x seeds 1-3 with the released
# recipe (CoOp's command, scripts/common/few_shot.sh): RN50 by default, 50 epochs at 1 shot, 100 at 2/4, 200 at
# 8/16, 50 on ImageNet. CFG=vit_b16 or rn50_learned_ratio for another config; RECIPE=fixed runs CFG as it is.
source "$(dirname "$0")/../common/help.sh" 1 "$@"
DATASET=$1; shift
for SHOTS in ${SHOTS_LIST:-1 2 4 8 16}; do for SEED in ${SEEDS:-1 2 3}; do
    bash "$(dirname "$0")/../common/few_shot.sh" CLIPAdapter "${CFG:-}" "$DATASET" "$SHOTS" "$SEED" "$@"
done; done
