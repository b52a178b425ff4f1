#!/usr/bin/env bash
# The 224 px PushT recipe on a lent GPU, in one call of at most 10 minutes (prepared on the CPU; not yet run).
# On a fresh GPU machine whose python3 has torch (and nothing of this project), as scripts/gpu_check.sh:
#   1. install the project's other dependencies from wheels carried in .whl/ (EGL loaders from .gl/*.deb);
#   2. collect 1,000 noisy-expert PushT episodes at 224 px on 16 workers (DINO-WM's 0.48 came from 1,000);
#   3. train a JEPA at 224 px (16 px patches pooled to a 7x7 grid of tokens, a wider encoder and predictor) in bf16
#      with torch.compile for at most 5 minutes;
#   4. plan toward 50 fresh goals (`wm collect --seed 9` episodes, never trained on) with iCEM in bf16, beside zero
#      actions on the same pairs.
# Writes $OUT/report.json (machine, each step's exit code, seconds and log tail, the plan's results) and brings the
# checkpoint back as $OUT/jepa-pusht-224 (fp16 weights + config).
#   run: bash scripts/gpu_pusht.sh   (carrying .whl and .gl)
set -u
OUT=${OUT:-runs/gpu_pusht}
WORK=/tmp/gpu_pusht
source scripts/gpu_prelude.sh
PUSHT="--env wm/PushT-v0 --image-size 224 --workers 16"

step collect 120 $WM collect $PUSHT --episodes 1000 --seed 21 --out $WORK/pusht
step collect_fresh 30 $WM collect $PUSHT --episodes 50 --seed 9 --out $WORK/fresh
step train 330 $WM train --data $WORK/pusht --model jepa --out $WORK/train --steps 100000 --device cuda \
  time_limit_s=300 batch_size=64 bf16=true compile=true encoder.tokens=49 encoder.width=192 encoder.depth=6 \
  encoder.heads=6 predictor.dim=384 predictor.depth=6 predictor.heads=6
step plan 100 $WM plan --checkpoint $WORK/train/model --env wm/PushT-v0 --data $WORK/fresh --episodes 50 \
  --planner icem --bf16 --device cuda --out $WORK/plan

python3 scripts/ship_checkpoint.py "$WORK/train/model" "$OUT/jepa-pusht-224" --path "$WORK/pusht=data/PushT1k-224" \
  >"$WORK/logs/ship.log" 2>&1
python3 scripts/gpu_report.py "$WORK" plan=plan/results.json train=train/model/config.json >"$OUT/report.json"
