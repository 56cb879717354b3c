# Shared by every protocol script: data root, run-from-repo-root, and "skip finished, resume unfinished".
# DATA defaults to ./data (the built-in world lives there); export DATA=/path/to/datasets for the benchmarks.
# Where a run goes and whether it is finished is decided once, by the run registry (clipadapt/runs.py):
# KEY VALUE options that change the config get their own folder (e.g. vit_b16_nctx4).
set -euo pipefail
# A relative DATA or OUTPUT given by the caller means a folder under the caller's directory, not under
# the repository root that the scripts move to (the defaults are the repository's ./data and output).
if [ -n "${DATA:-}" ] && [[ "$DATA" != /* ]]; then DATA="$PWD/$DATA"; fi
if [ -n "${OUTPUT:-}" ] && [[ "$OUTPUT" != /* ]]; then OUTPUT="$PWD/$OUTPUT"; fi
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DATA=${DATA:-./data}
OUTPUT=${OUTPUT:-output}
export DATA OUTPUT

# run KIND TRAINER CFG DATASET SEED SHOTS [KEY VALUE ...]: plan the run with the registry, then run
# train.py into its folder unless that folder holds a finished run. KIND is the scripts/common script
# (base2new_train, base2new_test, few_shot, gzsl, xd_train, xd_test); an evaluation loads the last
# epoch that the training config names (LOADEP overrides it).
run() {
    local plan
    plan=$(python -m clipadapt.runs plan "$@") || return $?
    local RUN_NOTE RUN_DIR RUN_STATE RUN_ARGS
    eval "$plan"
    [ -z "$RUN_NOTE" ] || echo "$RUN_NOTE"
    if [ "$RUN_STATE" = finished ]; then
        echo "The results exist at ${RUN_DIR} (so skip this job)"; return 0
    fi
    CLIPADAPT_PROTOCOL=$1 python train.py "${RUN_ARGS[@]}"
}
