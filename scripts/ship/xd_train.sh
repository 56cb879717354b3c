#!/usr/bin/env bash
# bash scripts/ship/xd_train.sh SEED [KEY VALUE ...]  (ImageNet, all classes, 16 shots). With every
# class seen there is nothing to synthesize: this run is CoOp with SHIP's stage-2 recipe (docs/SHIP.md).
source "$(dirname "$0")/../common/help.sh" 1 "$@"
exec bash "$(dirname "$0")/../common/xd_train.sh" SHIP "${CFG:-}" "$@"
