#!/usr/bin/env bash
# bash scripts/promptsrc/gzsl.sh DATASET SEED [KEY VALUE ...]
exec bash "$(dirname "$0")/../common/gzsl.sh" PromptSRC "${CFG:-}" "$@"
