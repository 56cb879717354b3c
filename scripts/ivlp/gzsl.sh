#!/usr/bin/env bash
# bash scripts/ivlp/gzsl.sh DATASET SEED [KEY VALUE ...]
exec bash "$(dirname "$0")/../common/gzsl.sh" IVLP "${CFG:-}" "$@"
