"""The report of a GPU script (`scripts/gpu_check.sh`, `scripts/gpu_pusht.sh`) as JSON on stdout: the machine, and
for each step in `WORK/steps.txt` its exit code, seconds, the tail of its log and, where `NAME=PATH` names a JSON
file under WORK that the step wrote, the key results in it.

    python3 scripts/gpu_report.py WORK plan=plan/results.json train=train/model/config.json > report.json
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

KEEP = ("success_rate", "success_95ci", "zero_action_success", "final_distance", "decision_latency_ms", "seconds",
        "step", "train", "imagined_success_first", "imagined_success_last", "imagined_steps")  # fmt: skip


def main() -> None:
    work = Path(sys.argv[1])
    results = dict(arg.split("=", 1) for arg in sys.argv[2:])
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
               "cuda_available": torch.cuda.is_available()}  # fmt: skip
    if torch.cuda.is_available():
        machine.update(device=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported())
    steps = {}
    for line in (work / "steps.txt").read_text().splitlines():
        name, rc, seconds = line.split()
        log = (work / "logs" / f"{name}.log").read_text()[-3000:]
        entry = {"rc": int(rc), "seconds": int(seconds), "log_tail": log}
        path = work / results.get(name, "-")
        if path.is_file():
            data = json.loads(path.read_text())
            entry["results"] = {k: data[k] for k in KEEP if k in data}
        steps[name] = entry
    print(json.dumps({"machine": machine, "steps": steps}, indent=2))


if __name__ == "__main__":
    main()
