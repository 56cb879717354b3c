# Shared by every protocol script: data root, run-from-repo-root, and "skip finished, resume unfinished".
# DATA defaults to ./data (the built-in world lives there); export DATA=/path/to/datasets for the benchmarks.
set -euo pipefail
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
