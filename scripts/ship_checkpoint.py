"""Copy a checkpoint into `checkpoints/` the way shipped checkpoints are stored: floating-point weights as fp16
(half the size; loading casts them back to the model's fp32) and the config as it is.

Usage: python scripts/ship_checkpoint.py RUN/model checkpoints/jepa-pointmaze [--force]
Prints JSON: the size before and after, and the largest weight change the fp16 rounding made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--force", action="store_true", help="replace an existing target")
    args = parser.parse_args()
    source, target = Path(args.source), Path(args.target)
    if not (source / "config.json").is_file():
        sys.exit(f"{source} is not a checkpoint (no config.json)")
    if target.exists() and not args.force:
        sys.exit(f"{target} exists; pass --force to replace it")
    state = load_file(str(source / "model.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    rounding = max(float((half[k].float() - v.float()).abs().max()) for k, v in state.items() if v.numel())
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(half, str(tmp / "model.safetensors"))
    shutil.copy(source / "config.json", tmp / "config.json")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    sizes = {p: (Path(p) / "model.safetensors").stat().st_size for p in (source, target)}
    print(json.dumps({"source_mb": round(sizes[source] / 2**20, 2), "shipped_mb": round(sizes[target] / 2**20, 2),
                      "max_rounding": rounding, "target": str(target)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
