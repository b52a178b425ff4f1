# Sourced by the GPU scripts (scripts/gpu_check.sh, scripts/gpu_pusht.sh) with WORK set: on a fresh GPU machine
# whose python3 has torch and nothing of this project, install the project's other dependencies from the wheels
# carried in .whl/ (and EGL loaders from .gl/*.deb), and define `step NAME SECONDS COMMAND...`, which runs a
# command time-boxed and records its exit code and seconds in $WORK/steps.txt (its log in $WORK/logs/NAME.log).
# `python3 scripts/gpu_report.py $WORK NAME=RESULTS.json ...` then writes the report.
mkdir -p "$OUT" "$WORK/logs"
export MUJOCO_GL=egl PYTHONUNBUFFERED=1

step() {
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
