#!/usr/bin/env bash
# bash scripts/coop/gzsl.sh DATASET SEED [KEY VALUE ...]
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/gzsl.sh" CoOp "${CFG:-}" "$@"
