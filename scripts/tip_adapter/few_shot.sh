#!/usr/bin/env bash
# bash scripts/tip_adapter/few_shot.sh DATASET [KEY VALUE ...]: training-free Tip-Adapter, 1/2/4/8/16 shots x
# seeds 1-3 (SHOTS_LIST / SEEDS to run fewer; CFG=rn50 by default, as released). alpha and beta are
# searched on the few-shot validation split (min(shots, 4) per class).
source "$(dirname "$0")/../common/help.sh" 1 "$@"
DATASET=$1; shift
for SHOTS in ${SHOTS_LIST:-1 2 4 8 16}; do for SEED in ${SEEDS:-1 2 3}; do
    bash "$(dirname "$0")/../common/few_shot.sh" TipAdapter "${CFG:-}" "$DATASET" "$SHOTS" "$SEED" "$@"
done; done
