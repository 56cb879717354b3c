#!/usr/bin/env bash
# bash scripts/clip_adapter/base2new_test.sh DATASET SEED [KEY VALUE ...]  (same CFG as the training run)
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/base2new_test.sh" CLIPAdapter "${CFG:-}" "$@"
