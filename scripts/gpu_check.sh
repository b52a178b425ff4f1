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
mkdir -p "$OUT" "$WORK/logs"
export MUJOCO_GL=egl PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run time-boxed; record the exit code and seconds
  local name=$1 limit=$2 started=$SECONDS
  shift 2
  timeout "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
  echo "$name $? $((SECONDS - started))" >>"$WORK/steps.txt"
}

if [ -d .gl ]; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
export PYTHONPATH=$PWD
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
: >"$WORK/steps.txt"
WM="python3 -m wm.app.cli"
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

python3 - "$WORK" >"$OUT/report.json" <<'EOF'
import json, platform, sys
from pathlib import Path
import torch

work = Path(sys.argv[1])
machine = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    machine.update(device=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported())
results = {"plan_fp32": "plan_fp32/results.json", "plan_bf16": "plan_bf16/results.json",
           "train_bf16_compile": "train/model/config.json", "refine": "refine/summary.json"}
steps = {}
for line in (work / "steps.txt").read_text().splitlines():
    name, rc, seconds = line.split()
    entry = {"rc": int(rc), "seconds": int(seconds), "log_tail": (work / "logs" / f"{name}.log").read_text()[-3000:]}
    path = work / results.get(name, "-")
    if path.is_file():
        data = json.loads(path.read_text())
        keep = ("success_rate", "success_95ci", "zero_action_success", "decision_latency_ms", "seconds", "step",
                "train", "imagined_success_first", "imagined_success_last", "imagined_steps")
        entry["results"] = {k: data[k] for k in keep if k in data}
    steps[name] = entry
print(json.dumps({"machine": machine, "steps": steps}, indent=2))
EOF
cat "$WORK/steps.txt"
