#!/usr/bin/env bash
# SHIP's ablations (Tables 4-6 of the paper) on one dataset and seed, base-to-new, each variant in
# its own output tree
#   ${OUTPUT}/ship_ablation/<variant>/base2new/...
# then `python scripts/ship/summarize_ablation.py ${OUTPUT}/ship_ablation --reference` gives the table.
#
#   bash scripts/ship/ablation.sh DATASET SEED [KEY VALUE ...]     (CFG=... to change the config)
#   e.g. CFG=shapes bash scripts/ship/ablation.sh shapes 1
#
# Variants (VARIANTS="full L1 ..." runs a subset; default all; switches in summarize_ablation.py):
#   full                 the defaults: VAE, CLIP-based generator, global prompts, identical bias, L=4
#   no_synthesis         SYN_PER_REAL 0: nothing synthesized (CoOp over all class names, base images only;
#                        the paper's "CoOp alone" row is the CoOp trainer, not this)
#   mlp_generator        GENERATOR mlp: a 3-layer MLP generates features from scratch (Table 4)
#   no_global            GLOBAL_PROMPT False: the prompt is the local bias alone (Table 5)
#   no_global_sequential GLOBAL_PROMPT False, BIAS sequential (Table 5)
#   sequential           BIAS sequential: [r1, ..., rL] (Table 5)
#   L1, L2, L8           N_CTX_VAE 1, 2, 8: the prompt length (Table 6)
# The GAN rows of Table 4 have no variant (docs/SHIP.md says why).
source "$(dirname "${BASH_SOURCE[0]}")/../common/help.sh" 2 "$@"
source "$(dirname "${BASH_SOURCE[0]}")/../common/env.sh"
DATASET=$1; SEED=$2; shift 2
CFG=${CFG:-vit_b16}
ROOT=${OUTPUT}
SUMMARY="python scripts/ship/summarize_ablation.py"
ALL=$($SUMMARY --list | tr '\n' ' ')
VARIANTS=${VARIANTS:-$ALL}
for VARIANT in $VARIANTS; do
    $SUMMARY --switch "$VARIANT" >/dev/null 2>&1 || { echo "ablation.sh: unknown variant '${VARIANT}'; choose from: ${ALL}" >&2; exit 2; }
done
for VARIANT in $VARIANTS; do
    SWITCH=$($SUMMARY --switch "$VARIANT")
    # shellcheck disable=SC2206  # the switch is KEY VALUE, split on purpose
    OPTS=(${SWITCH} "$@")
    echo "=== SHIP ablation on ${DATASET}, seed ${SEED}: ${VARIANT} ${SWITCH} ==="
    export OUTPUT=${ROOT}/ship_ablation/${VARIANT}
    bash scripts/common/base2new_train.sh SHIP "$CFG" "$DATASET" "$SEED" "${OPTS[@]}"
    bash scripts/common/base2new_test.sh SHIP "$CFG" "$DATASET" "$SEED" "${OPTS[@]}"
done
