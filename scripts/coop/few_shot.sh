#!/usr/bin/env bash
# bash scripts/coop/few_shot.sh DATASET [KEY VALUE ...]: 1/2/4/8/16 shots x seeds 1-3, with CoOp's
# published recipe per shot count (scripts/common/few_shot.sh): RN50 (the paper's backbone) by default;
# CFG=vit_b16 (or rn101, vit_b32, *_ctxv1) for another backbone; RECIPE=fixed runs CFG as it is.
source "$(dirname "$0")/../common/help.sh" 1 "$@"
DATASET=$1; shift
for SHOTS in ${SHOTS_LIST:-1 2 4 8 16}; do for SEED in ${SEEDS:-1 2 3}; do
    bash "$(dirname "$0")/../common/few_shot.sh" CoOp "${CFG:-}" "$DATASET" "$SHOTS" "$SEED" "$@"
done; done
