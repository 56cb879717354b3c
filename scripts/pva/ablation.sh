#!/usr/bin/env bash
# PVA's ablation (the paper's table of switches) on one dataset and seed: the full method and each
# switch turned off, under base-to-new and GZSL, each variant in its own output tree
#   ${OUTPUT}/pva_ablation/<variant>/{base2new,gzsl}/...
# so that `python parse_test_res.py --table base2new --root ${OUTPUT}/pva_ablation/<variant>` (or
# --table gzsl) gives its row.
#
#   bash scripts/pva/ablation.sh DATASET SEED [KEY VALUE ...]     (CFG=... to change the config)
#   e.g. CFG=shapes bash scripts/pva/ablation.sh shapes 1
#
# Variants (VARIANTS="full no_residual ..." runs a subset; default all):
#   full            the defaults
#   no_variational  VARIATIONAL False: deterministic adapters, z = mu, no KL
#   no_separation   SEPARATION False: every sample through the fine-tuned classifier
#   no_residual     RESIDUAL False: lambda = 0
#   residual_all    RESIDUAL_SCOPE all: the residual on every sample, in training too
#   novel_zeroshot  NOVEL_CLASSIFIER zeroshot: novel-like samples get plain CLIP zero-shot
#   no_visual_tokens VISUAL_TOKENS False: learnable tokens on the text side only
#   measure_cosine  MEASURE cosine: route by cosine of the means (no variance)
#   align_kl        ALIGN kl: KL(q_v || q_t) as the alignment term
#   mc8             MC_SAMPLES 8: 8 samples of z at test time (routing and classification)
source "$(dirname "${BASH_SOURCE[0]}")/../common/help.sh" 2 "$@"
source "$(dirname "${BASH_SOURCE[0]}")/../common/env.sh"
DATASET=$1; SEED=$2; shift 2
CFG=${CFG:-vit_b16}
ROOT=${OUTPUT}
declare -A SWITCH=(
    [full]=""
    [no_variational]="TRAINER.PVA.VARIATIONAL False"
    [no_separation]="TRAINER.PVA.SEPARATION False"
    [no_residual]="TRAINER.PVA.RESIDUAL False"
    [residual_all]="TRAINER.PVA.RESIDUAL_SCOPE all"
    [novel_zeroshot]="TRAINER.PVA.NOVEL_CLASSIFIER zeroshot"
    [no_visual_tokens]="TRAINER.PVA.VISUAL_TOKENS False"
    [measure_cosine]="TRAINER.PVA.MEASURE cosine"
    [align_kl]="TRAINER.PVA.ALIGN kl"
    [mc8]="TRAINER.PVA.MC_SAMPLES 8"
)
ALL="full no_variational no_separation no_residual residual_all novel_zeroshot no_visual_tokens measure_cosine align_kl mc8"
VARIANTS=${VARIANTS:-$ALL}
for VARIANT in $VARIANTS; do
    [ -n "${SWITCH[$VARIANT]+set}" ] || { echo "ablation.sh: unknown variant '${VARIANT}'; choose from: ${ALL}" >&2; exit 2; }
done
for VARIANT in $VARIANTS; do
    # shellcheck disable=SC2206  # the switch is KEY VALUE, split on purpose
    OPTS=(${SWITCH[$VARIANT]} "$@")
    echo "=== PVA ablation on ${DATASET}, seed ${SEED}: ${VARIANT} ${SWITCH[$VARIANT]} ==="
    export OUTPUT=${ROOT}/pva_ablation/${VARIANT}
    bash scripts/common/base2new_train.sh PVA "$CFG" "$DATASET" "$SEED" "${OPTS[@]}"
    bash scripts/common/base2new_test.sh PVA "$CFG" "$DATASET" "$SEED" "${OPTS[@]}"
    bash scripts/common/gzsl.sh PVA "$CFG" "$DATASET" "$SEED" "${OPTS[@]}"
done
