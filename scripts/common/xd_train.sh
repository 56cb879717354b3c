#!/usr/bin/env bash
# Cross-dataset / domain generalization source run: all SOURCE (default imagenet) classes, 16 shots.
# bash scripts/common/xd_train.sh TRAINER CFG SEED [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/help.sh" 3 "$@"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TRAINER=$1; CFG=$2; SEED=$3; shift 3
run xd_train "$TRAINER" "$CFG" "${SOURCE:-imagenet}" "$SEED" "${SHOTS:-16}" "$@"
