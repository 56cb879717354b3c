#!/usr/bin/env bash
# bash scripts/ship/xd_train.sh SEED [KEY VALUE ...]  (ImageNet, all classes, 16 shots; SOURCE=... for another)
# The cross-dataset source run. Every class has images, so nothing is synthesized and stage 2 is CoOp
# over them; under TRAINER.SHIP.XD_PROTOCOL per_target (the paper's, the default) the generator trains
# here too, for the target runs of xd_test.sh (docs/SHIP.md).
source "$(dirname "$0")/../common/help.sh" 1 "$@"
exec bash "$(dirname "$0")/../common/xd_train.sh" SHIP "${CFG:-}" "$@"
