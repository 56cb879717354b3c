#!/usr/bin/env bash
# Evaluate the source-trained checkpoint on another dataset (cross-dataset) or an ImageNet variant
# (domain generalization). bash scripts/common/xd_test.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/help.sh" 4 "$@"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; DATASET=$3; SEED=$4; shift 4
run xd_test "$TRAINER" "$CFG" "$DATASET" "$SEED" "${SHOTS:-16}" "$@"
