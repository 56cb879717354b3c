#!/usr/bin/env bash
# Few-shot: bash scripts/common/few_shot.sh TRAINER CFG DATASET SHOTS SEED [KEY VALUE ...]
#
# CoOp's published recipe (CoOp's COOP.md and IJCV paper): for TRAINER CoOp, or CLIPAdapter (whose
# released code is run "with CoOp's command"), and a CFG that names a backbone config (rn50, rn101,
# vit_b16, vit_b32, or their _ctxv1 / _learned_ratio variants), the run trains 50 epochs at
# 1 shot (<backbone>_ep50[_ctxv1].yaml), 100 at 2 and 4 shots (<backbone>_ep100[_ctxv1].yaml) and 200
# at 8 and 16 (CFG itself); on ImageNet 50 at every shot count. The run folder keeps CFG's name
# (<cfg>_<shots>shots), so one backbone's runs form one column group of the few-shot table.
# RECIPE=fixed runs CFG as it is at every shot count. (The recipe is clipadapt.runs.recipe_config,
# which the sweep launchers use too.)
source "$(dirname "${BASH_SOURCE[0]}")/help.sh" 5 "$@"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; DATASET=$3; SHOTS=$4; SEED=$5; shift 5
run few_shot "$TRAINER" "$CFG" "$DATASET" "$SEED" "$SHOTS" "$@"
