#!/usr/bin/env bash
# bash scripts/tip_adapter/base2new_train.sh DATASET SEED [KEY VALUE ...]: build on the base classes, test on them.
# There is no base2new_test.sh with SUB=new: the cache holds the base classes only (SHIP with
# TRAINER.SHIP.STAGE2 tip_adapter_f adds the new classes: scripts/ship/).
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/base2new_train.sh" TipAdapter "${CFG:-}" "$@"
