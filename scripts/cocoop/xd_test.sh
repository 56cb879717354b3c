#!/usr/bin/env bash
# bash scripts/cocoop/xd_test.sh DATASET SEED [KEY VALUE ...]  (a cross-dataset or domain-generalization target)
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/xd_test.sh" CoCoOp "${CFG:-}" "$@"
