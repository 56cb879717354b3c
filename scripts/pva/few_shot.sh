#!/usr/bin/env bash
# bash scripts/pva/few_shot.sh DATASET [KEY VALUE ...]: 1/2/4/8/16 shots x seeds 1-3
source "$(dirname "$0")/../common/help.sh" 1 "$@"
DATASET=$1; shift
for SHOTS in ${SHOTS_LIST:-1 2 4 8 16}; do for SEED in ${SEEDS:-1 2 3}; do
    bash "$(dirname "$0")/../common/few_shot.sh" PVA "${CFG:-}" "$DATASET" "$SHOTS" "$SEED" "$@"
done; done
