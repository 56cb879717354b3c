#!/usr/bin/env bash
# Generalized zero-shot: train on the seen (base) classes, test on all classes' test images in the
# joint label space; the log ends with acc_seen / acc_unseen / hm.
# bash scripts/common/gzsl.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/help.sh" 4 "$@"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; DATASET=$3; SEED=$4; shift 4
run gzsl "$TRAINER" "$CFG" "$DATASET" "$SEED" "${SHOTS:-16}" "$@"
