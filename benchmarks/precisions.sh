#!/usr/bin/env bash
# Every trainer end to end (base-to-new: train on base, test base and new) on the built-in world,
# once per precision, then one table with a column group per trainer and precision: the check a GPU
# machine is for. On a CPU, fp16 and amp fall back to fp32 (their rows equal fp32's) and bf16 runs
# the bf16 CLIP.
#
#   bash benchmarks/precisions.sh
#   PRECS="fp16 amp" TRAINERS="CoOp PVA" SEEDS="1 2" bash benchmarks/precisions.sh
#   OPTS="OPTIM.MAX_EPOCH 2" bash benchmarks/precisions.sh     # KEY VALUE options for every run
#
# The world's configs are fp32, so the fp32 runs keep the plain config name ("CoOp/shapes").
# DATA (default ./data) holds the world, generated if missing; OUTPUT (default output/precisions)
# the runs, one folder per precision (config "shapes_precfp16", ...), and each sweep's output under
# logs/. Finished runs are skipped, so an interrupted check goes on where it stopped. Prints each
# sweep's wall time, then the table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=${DATA:-./data}
OUTPUT=${OUTPUT:-output/precisions}
PRECS=${PRECS:-fp32 fp16 bf16 amp}
TRAINERS=${TRAINERS:-ZeroshotCLIP CoOp CoCoOp KgCoOp MaPLe IVLP PromptSRC CLIPAdapter SHIP PVA}
SEEDS=${SEEDS:-1}
OPTS=${OPTS:-}

LOGS="${OUTPUT}/logs"
mkdir -p "$LOGS"
python -m clipadapt.world.shapes --root "$DATA"
python -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu', '| torch', torch.__version__)"
for TRAINER in $TRAINERS; do
    NODE=$(python -c "import trainers; from clipadapt.engine import TRAINER_REGISTRY; print(TRAINER_REGISTRY.get('$TRAINER').CONFIG_NODE)")
    for PREC in $PRECS; do
        START=$(date +%s)
        # shellcheck disable=SC2086
        python -m clipadapt.sweep base2new "$TRAINER" shapes --datasets shapes --seeds $SEEDS --data "$DATA" \
            --output "$OUTPUT" -- "TRAINER.${NODE}.PREC" "$PREC" $OPTS > "${LOGS}/${TRAINER}_${PREC}.log" 2>&1 || {
            echo "FAILED: ${TRAINER} PREC ${PREC} (log: ${LOGS}/${TRAINER}_${PREC}.log)"; tail -5 "${LOGS}/${TRAINER}_${PREC}.log"
            continue; }
        echo "${TRAINER} PREC ${PREC}: $(( $(date +%s) - START )) s"
    done
done
# One row per trainer and precision (the paper-style table has a column group for each).
python parse_test_res.py --table base2new --root "$OUTPUT" --format csv | python -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
header, average = rows[0], next(r for r in rows if r[0] == "Average")
print("| trainer / config | Base | New | HM |\n|---|---|---|---|")
for i in range(1, len(header) - 1, 3):
    name = header[i].rsplit(" ", 1)[0]
    print(f"| {name} | {average[i]} | {average[i + 1]} | {average[i + 2]} |")
'
