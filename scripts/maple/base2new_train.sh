#!/usr/bin/env bash
# bash scripts/maple/base2new_train.sh DATASET SEED [KEY VALUE ...]  (CFG=... to change the config)
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/base2new_train.sh" MaPLe "${CFG:-}" "$@"
