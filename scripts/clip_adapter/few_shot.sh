#!/usr/bin/env bash
# bash scripts/clip_adapter/few_shot.sh DATASET [KEY VALUE ...]: 1/2/4/8/16 shots x seeds 1-3.
# The released recipe: CLIP-Adapter's code is a CoOp trainer run "with CoOp's command", so the few-shot
# runs follow CoOp's COOP.md: backbone RN50 (CFG=rn50), 50 epochs for 1 shot, 100 for 2 and 4 shots,
# 200 for 8 and 16, and 50 for every shot count on ImageNet. EPOCHS="e1 e2 e4 e8 e16" overrides the
# schedule; CFG=... another config (the epochs still follow the schedule unless EPOCHS is given).
DATASET=$1; shift
if [ "$DATASET" = imagenet ]; then DEFAULT_EPOCHS="50 50 50 50 50"; else DEFAULT_EPOCHS="50 100 100 200 200"; fi
read -r -a EPOCH_LIST <<< "${EPOCHS:-$DEFAULT_EPOCHS}"
SHOT_LIST=(1 2 4 8 16)
for i in 0 1 2 3 4; do for SEED in 1 2 3; do
    bash "$(dirname "$0")/../common/few_shot.sh" CLIPAdapter "${CFG:-rn50}" "$DATASET" "${SHOT_LIST[$i]}" "$SEED" \
        OPTIM.MAX_EPOCH "${EPOCH_LIST[$i]}" "$@"
done; done
