#!/usr/bin/env bash
# bash scripts/pva/gzsl.sh DATASET SEED [KEY VALUE ...]  (the log ends with the separation diagnostics)
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/gzsl.sh" PVA "${CFG:-}" "$@"
