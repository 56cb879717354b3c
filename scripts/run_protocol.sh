#!/usr/bin/env bash
# One command per protocol: every dataset x seed of PROTOCOL for TRAINER, then the paper-style table.
#
#   bash scripts/run_protocol.sh [LAUNCHER OPTIONS] PROTOCOL TRAINER [CFG] [KEY VALUE ...]
#   e.g. bash scripts/run_protocol.sh base2new CoOp
#        DATA=/data SEEDS="1" DATASETS="eurosat dtd" bash scripts/run_protocol.sh gzsl CoOp vit_b16_ctxv1
#        bash scripts/run_protocol.sh --launcher parallel --jobs 8 base2new CoOp      # 8 GPUs (or processes)
#        bash scripts/run_protocol.sh --launcher slurm --partition gpu --gpus 1 --time 120 base2new CoOp
#
# PROTOCOL and its datasets (DATASETS="..." replaces the list):
#   base2new  the 11 CoOp datasets: train on base classes, test on base and new (base2new_train/test.sh)
#   fewshot   the 11 CoOp datasets x shots SHOTS_LIST (default "1 2 4 8 16") (few_shot.sh)
#   xd        train on SOURCE (default imagenet, 16 shots, all classes), test on the 10 other CoOp
#             datasets (xd_train.sh, xd_test.sh); SOURCE=shapes: the world's targets shapes_shape,
#             shapes_colour, shapes_size (python -m clipadapt.world.shapes --targets)
#   dg        train on SOURCE as for xd, test on imagenetv2 imagenet_sketch imagenet_a imagenet_r
#   gzsl      the classic GZSL benchmarks cub awa2 sun_gzsl flo (what the papers report; the CoOp
#             datasets work too, e.g. DATASETS="caltech101 eurosat", with seen = base and unseen = new)
# SEEDS (default "1 2 3"); SHOTS (default 16) for base2new, xd, dg and gzsl, as in scripts/common.
#
# LAUNCHER OPTIONS (before PROTOCOL; see python -m clipadapt.sweep --help):
#   --launcher local      one run after another (the default)
#   --launcher parallel   --jobs N runs at a time: one per GPU (CUDA_VISIBLE_DEVICES), or N CPU processes
#   --launcher slurm      a Slurm job array per stage (submitit): --partition P --time MINUTES --gpus G
#                         --cpus C --mem-gb M; --no-wait returns after submitting (run again for the table)
#
# CFG names configs/trainers/TRAINER/CFG.yaml. Without it, the CFG is the default of the method's own
# wrapper for that protocol: the "${CFG:-...}" of the scripts/<method>/ script that runs
# scripts/common/<script> for TRAINER (base2new_train.sh, xd_train.sh, few_shot.sh or gzsl.sh), so a
# protocol runs with the same config here as through the method's scripts.
# KEY VALUE pairs (they contain a dot, e.g. OPTIM.MAX_EPOCH 5) go to every train.py run; options that
# change the config put the runs in their own folders (clipadapt/runs.py).
#
# DATA and OUTPUT are read as by scripts/common/env.sh (default ./data and output). Finished runs are
# skipped and unfinished ones resumed, so the command can simply be run again (after a kill too).
# A failed run is reported and the others go on; the exit status is then 1.
source "$(dirname "${BASH_SOURCE[0]}")/common/env.sh"
export DATA OUTPUT

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    echo "error: $1" >&2
    exit 2
}

LAUNCH=()
while [ $# -gt 0 ] && [[ "$1" == -* ]]; do
    case "$1" in
        -h|--help) sed -n '2,/^[^#]/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --no-wait) LAUNCH+=("$1"); shift ;;
        --launcher|--jobs|--partition|--time|--gpus|--cpus|--mem-gb|--poll)
            [ $# -ge 2 ] || usage "$1 needs a value"; LAUNCH+=("$1" "$2"); shift 2 ;;
        *) usage "unknown option $1 (launcher options: --launcher --jobs --no-wait --partition --time --gpus --cpus --mem-gb)" ;;
    esac
done
[ $# -ge 2 ] || usage "give PROTOCOL and TRAINER"
PROTOCOL=$1; TRAINER=$2; shift 2
# The protocol's datasets and the trainer's default config come from clipadapt/protocols.py.
DEFAULT_DATASETS=$(python -m clipadapt.protocols datasets "$PROTOCOL" --source "${SOURCE:-imagenet}" 2>&1) || usage "${DEFAULT_DATASETS#error: }"
[ -d "configs/trainers/$TRAINER" ] || usage "no configs/trainers/$TRAINER/ (trainers with configs: $(ls configs/trainers | tr '\n' ' '))"

CFG=""
if [ $# -gt 0 ] && [[ "$1" != *.* ]]; then CFG=$1; shift; fi
if [ -z "$CFG" ]; then
    CFG=$(python -m clipadapt.protocols default-config "$TRAINER" "$PROTOCOL" 2>&1) || usage "${CFG#error: }"
fi
[ -f "configs/trainers/$TRAINER/$CFG.yaml" ] || \
    usage "configs/trainers/$TRAINER/$CFG.yaml not found (have: $(cd "configs/trainers/$TRAINER" && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' '))"

DATASETS=${DATASETS:-$DEFAULT_DATASETS}
CHECK=$DATASETS
[[ "$PROTOCOL" == xd || "$PROTOCOL" == dg ]] && CHECK="${SOURCE:-imagenet} $DATASETS"
for DATASET in $CHECK; do
    [ -f "configs/datasets/$DATASET.yaml" ] || \
        usage "no configs/datasets/$DATASET.yaml (have: $(cd configs/datasets && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' '))"
done
SEEDS=${SEEDS:-1 2 3}
SHOTS_LIST=${SHOTS_LIST:-1 2 4 8 16}
echo "run_protocol: $PROTOCOL, trainer $TRAINER, config $CFG; datasets: $DATASETS; seeds: $SEEDS; DATA=$DATA OUTPUT=$OUTPUT"
# shellcheck disable=SC2086  # word lists
exec python -m clipadapt.sweep "$PROTOCOL" "$TRAINER" "$CFG" --datasets $DATASETS --seeds $SEEDS \
    --shots "${SHOTS:-16}" --shots-list $SHOTS_LIST --source "${SOURCE:-imagenet}" \
    --data "$DATA" --output "$OUTPUT" ${LAUNCH[@]+"${LAUNCH[@]}"} -- "$@"
