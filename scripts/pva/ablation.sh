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
# Variants: full, no_variational (VARIATIONAL False: z = mu, no KL), no_separation (SEPARATION False:
# every sample through the fine-tuned classifier), no_residual (RESIDUAL False: lambda = 0).
source "$(dirname "${BASH_SOURCE[0]}")/../common/env.sh"
[ $# -ge 2 ] || { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
DATASET=$1; SEED=$2; shift 2
CFG=${CFG:-vit_b16}
ROOT=${OUTPUT}
declare -A SWITCH=(
    [full]=""
    [no_variational]="TRAINER.PVA.VARIATIONAL False"
    [no_separation]="TRAINER.PVA.SEPARATION False"
    [no_residual]="TRAINER.PVA.RESIDUAL False"
)
for VARIANT in full no_variational no_separation no_residual; do
    # shellcheck disable=SC2206  # the switch is KEY VALUE, split on purpose
    OPTS=(${SWITCH[$VARIANT]} "$@")
    echo "=== PVA ablation on ${DATASET}, seed ${SEED}: ${VARIANT} ${SWITCH[$VARIANT]} ==="
    export OUTPUT=${ROOT}/pva_ablation/${VARIANT}
    bash scripts/common/base2new_train.sh PVA "$CFG" "$DATASET" "$SEED" "${OPTS[@]}"
    bash scripts/common/base2new_test.sh PVA "$CFG" "$DATASET" "$SEED" "${OPTS[@]}"
    bash scripts/common/gzsl.sh PVA "$CFG" "$DATASET" "$SEED" "${OPTS[@]}"
done
