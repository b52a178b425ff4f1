"""Copy a checkpoint into `checkpoints/` the way shipped checkpoints are stored: floating-point weights as fp16
(half the size; loading casts them back to the model's fp32), or as they are with `--exact` (policies: small, and
shipped bit for bit as measured), and the config with this machine's paths replaced (`--path OLD=NEW`, repeatable:
every string equal to OLD or under OLD/ gets NEW instead).

Usage: python scripts/ship_checkpoint.py RUN/model checkpoints/jepa-pointmaze [--force] [--exact]
           [--path /work/data=data ...]
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


def _relocated(value, relocate: list[tuple[str, str]]):
    """`value` (a JSON value) with every string path under an OLD prefix moved under its NEW one."""
    if isinstance(value, dict):
        return {k: _relocated(v, relocate) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocated(v, relocate) for v in value]
    if isinstance(value, str):
        for old, new in relocate:
            if value == old or value.startswith(old.rstrip("/") + "/"):
                return new + value[len(old.rstrip("/")) :]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--force", action="store_true", help="replace an existing target")
    parser.add_argument("--exact", action="store_true", help="keep the weights' dtypes (no fp16)")
    parser.add_argument("--path", action="append", default=[], metavar="OLD=NEW", help="replace a path prefix")
    args = parser.parse_args()
    if any("=" not in p for p in args.path):
        sys.exit(f"--path takes OLD=NEW, got {args.path}")
    relocate = [tuple(p.split("=", 1)) for p in args.path]
    source, target = Path(args.source), Path(args.target)
    if not (source / "config.json").is_file():
        sys.exit(f"{source} is not a checkpoint (no config.json)")
    if target.exists() and not args.force:
        sys.exit(f"{target} exists; pass --force to replace it")
    state = load_file(str(source / "model.safetensors"))
    half = {k: v.half() if v.is_floating_point() and not args.exact else v for k, v in state.items()}
    rounding = max(float((half[k].float() - v.float()).abs().max()) for k, v in state.items() if v.numel())
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(half, str(tmp / "model.safetensors"))
    config = json.loads((source / "config.json").read_text())
    (tmp / "config.json").write_text(json.dumps(_relocated(config, relocate), indent=2))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    sizes = {p: (Path(p) / "model.safetensors").stat().st_size for p in (source, target)}
    print(json.dumps({"source_mb": round(sizes[source] / 2**20, 2), "shipped_mb": round(sizes[target] / 2**20, 2),
                      "max_rounding": rounding, "target": str(target)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
