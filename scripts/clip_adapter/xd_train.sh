#!/usr/bin/env bash
# bash scripts/clip_adapter/xd_train.sh SEED [KEY VALUE ...]  (ImageNet, all classes, 16 shots)
exec bash "$(dirname "$0")/../common/xd_train.sh" CLIPAdapter "${CFG:-}" "$@"
