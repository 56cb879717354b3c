#!/usr/bin/env bash
# bash scripts/lpclip/few_shot.sh DATASET [KEY VALUE ...]: 1/2/4/8/16 shots x seeds 1-3 (CFG=rn50 by default:
# CoOp's lpclip backbone). C is chosen on the few-shot validation split (min(shots, 4) per class).
source "$(dirname "$0")/../common/help.sh" 1 "$@"
DATASET=$1; shift
for SHOTS in ${SHOTS_LIST:-1 2 4 8 16}; do for SEED in ${SEEDS:-1 2 3}; do
    bash "$(dirname "$0")/../common/few_shot.sh" LinearProbeCLIP "${CFG:-}" "$DATASET" "$SHOTS" "$SEED" "$@"
done; done
