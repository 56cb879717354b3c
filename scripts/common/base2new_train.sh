#!/usr/bin/env bash
# Base-to-new, training half: bash scripts/common/base2new_train.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
# Trains on the base classes (16 shots) and tests on them; output/base2new/train_base/...
source "$(dirname "${BASH_SOURCE[0]}")/help.sh" 4 "$@"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# CFG "": the trainer's default for the protocol (configs/trainers/TRAINER/protocol_defaults.json)
TRAINER=$1; CFG=$2; DATASET=$3; SEED=$4; shift 4
run base2new_train "$TRAINER" "$CFG" "$DATASET" "$SEED" "${SHOTS:-16}" "$@"
