"""Where models run: the `--device` flag (`auto`, `cpu`, `cuda`, `cuda:K`) parsed once, with a one-line error for a
device this machine lacks, and the device a module lives on, which the tensors made around it follow."""

from __future__ import annotations

import itertools
import re

import torch
from torch import nn

from wm.errors import WMError

DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda or cuda:K"


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The device `name` names: `auto` (or None) is `cuda:0` when CUDA is available, else `cpu`; `cuda` is
    `cuda:0`. A malformed name or a CUDA device this machine does not have is a one-line WMError."""
    text = "auto" if name is None else str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise WMError(f"unknown device {str(name)!r}; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        why = "no CUDA device is visible" if torch.backends.cuda.is_built() else "this torch is built without CUDA"
        raise WMError(f"device {text} is not available ({why}); use --device cpu or --device auto")
    index, count = int(match[1] or 0), torch.cuda.device_count()
    if index >= count:
        raise WMError(f"device {text} is not available: this machine has {count} CUDA device(s), to cuda:{count - 1}")
    return torch.device("cuda", index)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (cpu for a module with neither)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(batch: dict, device) -> dict:
    """`batch` with every tensor moved to `device` (non-blocking), other values as they are."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def bf16_autocast(device, enabled: bool = True):
    """bfloat16 autocast on `device`'s kind (a no-op context when not `enabled`): training and imagination (the
    planners, which import only protocols, open their own)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where bf16 planning is several times
    faster; elsewhere bf16 is emulated and slower than fp32."""
    cpu = torch.cpu
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
