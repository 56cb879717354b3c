#!/usr/bin/env bash
# bash scripts/ship/xd_test.sh DATASET SEED [KEY VALUE ...]
# One target of the cross-dataset protocol. Under TRAINER.SHIP.XD_PROTOCOL per_target (the paper's 4.2.2,
# the default) this is a training run: it starts from the source run's generator and CoOp
# (MODEL.INIT_RUN) and fine-tunes CoOp on features synthesized for all of DATASET's class names, then
# tests on DATASET. It uses the target's class names, never its images. XD_PROTOCOL single evaluates
# the source's model as it is (CoOp's single-model protocol).
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/xd_test.sh" SHIP "${CFG:-}" "$@"
