#!/usr/bin/env bash
# bash scripts/clip_adapter/gzsl.sh DATASET SEED [KEY VALUE ...]
exec bash "$(dirname "$0")/../common/gzsl.sh" CLIPAdapter "${CFG:-}" "$@"
