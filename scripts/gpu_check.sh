#!/usr/bin/env bash
# GPU readiness, in one call on a fresh GPU machine whose python3 has torch (and nothing of this project):
#   1. install the project's other dependencies from wheels carried in .whl/ (and EGL loaders from .gl/*.deb);
#   2. run the test suite with CUDA visible (models, planners and training pick `auto` = cuda);
#   3. `wm collect` (8 workers), `wm plan` on --device cuda in fp32 and bf16 on the same goals, `wm train` with
#      bf16=true compile=true, `wm refine` on cuda.
# Writes $OUT/report.json (the machine, and each step's exit code, seconds, the tail of its log and its results)
# and $OUT/pytest.log. Every step is time-boxed, so the whole check ends inside 8 minutes.
# Prepare here: download the missing wheels (python 3.12, manylinux; see the device notes) into .whl/ and the EGL
# .deb files into .gl/, both ignored by git; then run `bash scripts/gpu_check.sh` there, carrying .whl and .gl.
set -u
OUT=${OUT:-runs/gpu_check}
WORK=/tmp/gpu_check
source scripts/gpu_prelude.sh
MAZE="--checkpoint checkpoints/jepa-pointmaze --env wm/PointMaze-v0 --episodes 50 --device cuda"

step pytest 200 python3 -m pytest -q -p no:cacheprovider --timeout 90 tests
cp "$WORK/logs/pytest.log" "$OUT/pytest.log"
step collect 40 $WM collect --env wm/PointMaze-v0 --episodes 40 --workers 8 --out $WORK/store
step plan_fp32 50 $WM plan $MAZE --data $WORK/store --out $WORK/plan_fp32
step plan_bf16 40 $WM plan $MAZE --data $WORK/store --bf16 --out $WORK/plan_bf16
step train_bf16_compile 70 $WM train --data $WORK/store --model jepa --out $WORK/train --steps 200 \
  bf16=true compile=true batch_size=64
step refine 40 $WM refine --policy checkpoints/bc-pointmaze --algo ppo --imagined-steps 8192 --device cuda \
  --out $WORK/refine --data $WORK/store num_envs=256 checkpoint_every=8192

python3 scripts/gpu_report.py "$WORK" plan_fp32=plan_fp32/results.json plan_bf16=plan_bf16/results.json \
  train_bf16_compile=train/model/config.json refine=refine/summary.json >"$OUT/report.json"
cat "$WORK/steps.txt"
