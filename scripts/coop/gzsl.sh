#!/usr/bin/env bash
# bash scripts/coop/gzsl.sh DATASET SEED [KEY VALUE ...]
exec bash "$(dirname "$0")/../common/gzsl.sh" CoOp "${CFG:-}" "$@"
