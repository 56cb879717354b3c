#!/usr/bin/env bash
# bash scripts/clip_adapter/xd_test.sh DATASET SEED [KEY VALUE ...]
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/xd_test.sh" CLIPAdapter "${CFG:-}" "$@"
