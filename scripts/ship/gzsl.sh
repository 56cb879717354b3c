#!/usr/bin/env bash
# bash scripts/ship/gzsl.sh DATASET SEED [KEY VALUE ...]: seen = base (images), unseen = new (names only)
source "$(dirname "$0")/../common/help.sh" 2 "$@"
exec bash "$(dirname "$0")/../common/gzsl.sh" SHIP "${CFG:-}" "$@"
