#!/usr/bin/env bash
# bash scripts/maple/gzsl.sh DATASET SEED [KEY VALUE ...]
exec bash "$(dirname "$0")/../common/gzsl.sh" MaPLe "${CFG:-}" "$@"
