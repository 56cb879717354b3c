#!/usr/bin/env bash
# bash scripts/lpclip/base2new_train.sh DATASET SEED [KEY VALUE ...]: fit on the base classes, test on them.
# There is no base2new_test.sh with SUB=new: a linear probe has no weights for new classes.
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/base2new_train.sh" LinearProbeCLIP "${CFG:-}" "$@"
