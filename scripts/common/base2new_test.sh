#!/usr/bin/env bash
# Base-to-new, evaluation on the new classes (SUB=base: on the base classes) from the base-trained
# checkpoint's last epoch, read from the config (no LOADEP to edit).
# bash scripts/common/base2new_test.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/help.sh" 4 "$@"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; DATASET=$3; SEED=$4; shift 4
run base2new_test "$TRAINER" "$CFG" "$DATASET" "$SEED" "${SHOTS:-16}" "$@"
