#!/usr/bin/env bash
# bash scripts/promptsrc/few_shot.sh DATASET [KEY VALUE ...]: 1/2/4/8/16 shots x seeds 1-3 with PromptSRC's
# released few-shot config (50 epochs, GPA N(30, 30)); on StanfordCars, Flowers102, FGVCAircraft, DTD and
# EuroSAT with the GPA N(45, 5) the released config gives for them (the run folder's tag names it).
source "$(dirname "$0")/../common/help.sh" 1 "$@"
DATASET=$1; shift
case "$DATASET" in
    stanford_cars|oxford_flowers|fgvc_aircraft|dtd|eurosat) GPA=(TRAINER.PROMPTSRC.GPA_MEAN 45.0 TRAINER.PROMPTSRC.GPA_STD 5.0) ;;
    *) GPA=() ;;
esac
for SHOTS in ${SHOTS_LIST:-1 2 4 8 16}; do for SEED in ${SEEDS:-1 2 3}; do
    RECIPE=fixed bash "$(dirname "$0")/../common/few_shot.sh" PromptSRC "${CFG:-}" "$DATASET" "$SHOTS" "$SEED" "${GPA[@]}" "$@"
done; done
