#!/usr/bin/env bash
# bash scripts/ship/base2new_train.sh DATASET SEED [KEY VALUE ...]  (CFG=... to change the config,
# e.g. CFG=vit_b16_imagenet for ImageNet, CFG=vit_b16_clip_adapter for SHIP + CLIP-Adapter)
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/base2new_train.sh" SHIP "${CFG:-}" "$@"
