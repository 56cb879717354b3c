#!/usr/bin/env bash
# bash scripts/zsclip/base2new_test.sh DATASET SEED [KEY VALUE ...]
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/base2new_test.sh" ZeroshotCLIP "${CFG:-}" "$@"
