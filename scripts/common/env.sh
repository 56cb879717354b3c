# Shared by every protocol script: data root, run-from-repo-root, and "skip finished, resume unfinished".
# DATA defaults to ./data (the built-in world lives there); export DATA=/path/to/datasets for the benchmarks.
set -euo pipefail
# A relative DATA or OUTPUT given by the caller means a folder under the caller's directory, not under
# the repository root that the scripts move to (the defaults are the repository's ./data and output).
if [ -n "${DATA:-}" ] && [[ "$DATA" != /* ]]; then DATA="$PWD/$DATA"; fi
if [ -n "${OUTPUT:-}" ] && [[ "$OUTPUT" != /* ]]; then OUTPUT="$PWD/$OUTPUT"; fi
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DATA=${DATA:-./data}
OUTPUT=${OUTPUT:-output}

# finished LOGDIR: true when a run in LOGDIR printed its final test result (a run killed before
# that is started again and resumes from its last checkpoint).
finished() {
    [ -f "$1/log.txt" ] && cat "$1"/log.txt* | awk '/^Finish training|^Evaluate on the \*test\* set/ {f=1}
        f && /^\* accuracy:/ {ok=1} END {exit !ok}'
}

# last_epoch TRAINER CFG_FILE [opts...]: the epoch whose checkpoint the test scripts load.
last_epoch() {
    local trainer=$1 cfg_file=$2; shift 2
    python -m clipadapt.cfg_query --trainer "$trainer" --config-file "$cfg_file" OPTIM.MAX_EPOCH "$@"
}

# trains TRAINER: false for trainers that have nothing to train.
trains() {
    [ "$1" != "ZeroshotCLIP" ]
}

# launch TRAINER CFG DATASET SEED DIR [train.py args and KEY VALUE options...]
# Runs train.py into DIR unless DIR already holds a finished run; a trainer with nothing to train
# runs eval-only. Every protocol script calls this, so they differ only in DIR and options.
launch() {
    local trainer=$1 cfg=$2 dataset=$3 seed=$4 dir=$5; shift 5
    if finished "$dir"; then
        echo "The results exist at ${dir} (so skip this job)"; return 0
    fi
    local mode=()
    trains "$trainer" || mode=(--eval-only)
    python train.py --root "$DATA" --seed "$seed" --trainer "$trainer" \
        --dataset-config-file "configs/datasets/${dataset}.yaml" \
        --config-file "configs/trainers/${trainer}/${cfg}.yaml" \
        --output-dir "$dir" "${mode[@]}" "$@"
}

# launch_eval TRAINER CFG DATASET SEED DIR MODEL_DIR [KEY VALUE ...]: evaluate the last-epoch
# checkpoint of the run in MODEL_DIR (LOADEP overrides the epoch) on DATASET.
launch_eval() {
    local trainer=$1 cfg=$2 dataset=$3 seed=$4 dir=$5 model_dir=$6; shift 6
    local load=()
    if trains "$trainer"; then
        local epoch=${LOADEP:-$(last_epoch "$trainer" "configs/trainers/${trainer}/${cfg}.yaml" "$@")}
        load=(--model-dir "$model_dir" --load-epoch "$epoch" --eval-only)
    fi
    launch "$trainer" "$cfg" "$dataset" "$seed" "$dir" "${load[@]}" "$@"
}
