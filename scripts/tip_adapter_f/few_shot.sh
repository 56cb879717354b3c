#!/usr/bin/env bash
# bash scripts/tip_adapter_f/few_shot.sh DATASET [KEY VALUE ...]: Tip-Adapter-F, 1/2/4/8/16 shots x seeds 1-3
# (SHOTS_LIST / SEEDS to run fewer; CFG=rn50 by default: 20 epochs, 100 on EuroSAT, as released).
source "$(dirname "$0")/../common/help.sh" 1 "$@"
DATASET=$1; shift
for SHOTS in ${SHOTS_LIST:-1 2 4 8 16}; do for SEED in ${SEEDS:-1 2 3}; do
    bash "$(dirname "$0")/../common/few_shot.sh" TipAdapterF "${CFG:-}" "$DATASET" "$SHOTS" "$SEED" "$@"
done; done
