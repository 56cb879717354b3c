#!/usr/bin/env bash
# bash scripts/kgcoop/gzsl.sh DATASET SEED [KEY VALUE ...]
exec bash "$(dirname "$0")/../common/gzsl.sh" KgCoOp "${CFG:-}" "$@"
