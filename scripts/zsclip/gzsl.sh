#!/usr/bin/env bash
# bash scripts/zsclip/gzsl.sh DATASET SEED [KEY VALUE ...]
exec bash "$(dirname "$0")/../common/gzsl.sh" ZeroshotCLIP "${CFG:-}" "$@"
