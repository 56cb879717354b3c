#!/usr/bin/env bash
# bash scripts/ship/base2new_test.sh DATASET SEED [KEY VALUE ...]  (SUB=base to re-test the base classes)
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/base2new_test.sh" SHIP "${CFG:-}" "$@"
