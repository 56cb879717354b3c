#!/usr/bin/env bash
# bash scripts/cocoop/gzsl.sh DATASET SEED [KEY VALUE ...]
exec bash "$(dirname "$0")/../common/gzsl.sh" CoCoOp "${CFG:-}" "$@"
