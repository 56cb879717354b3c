#!/usr/bin/env bash
# bash scripts/zsclip/xd_train.sh SEED [KEY VALUE ...]  (ImageNet, all classes, 16 shots)
source "$(dirname "$0")/../common/help.sh" 1 "$@"
exec bash "$(dirname "$0")/../common/xd_train.sh" ZeroshotCLIP "${CFG:-}" "$@"
