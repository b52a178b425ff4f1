"""DINOv2 weights that load offline: Meta's, Hugging Face's or timm's files mapped onto timm's `VisionTransformer`.

A local file comes in one of three layouts, told apart by their keys: Meta's `dinov2_vit*14*_pretrain.pth`
(`ls1.gamma`, `mask_token`, `register_tokens`), Hugging Face `Dinov2Model` `model.safetensors` (`embeddings.*`,
`encoder.layer.*`, query/key/value fused into timm's `qkv`) or timm's own `state_dict()`. Official file names are
checked against their published sha256. The 37x37 position table is resampled once, exactly as DINOv2's torch.hub
models do on every forward, so features match the models DINO-WM used.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from wm.errors import WMError

PATCH_SIZE = 14
DINOV2_VARIANTS: dict[str, str] = {
    "vits14": "vit_small_patch14_dinov2",
    "vitb14": "vit_base_patch14_dinov2",
    "vitl14": "vit_large_patch14_dinov2",
    "vitg14": "vit_giant_patch14_dinov2",
    "vits14_reg": "vit_small_patch14_reg4_dinov2",
    "vitb14_reg": "vit_base_patch14_reg4_dinov2",
    "vitl14_reg": "vit_large_patch14_reg4_dinov2",
    "vitg14_reg": "vit_giant_patch14_reg4_dinov2",
}
_DIM_TO_SIZE = {384: "s", 768: "b", 1024: "l", 1536: "g"}
_HF_NAMES = {"s": "small", "b": "base", "l": "large", "g": "giant"}
_OFFICIAL_SHA256 = {"dinov2_vits14_pretrain.pth": "b938bf1bc15cd2ec0feacfe3a1bb553fe8ea9ca46a7e1d8d00217f29aef60cd9"}
_HF_SMALL_SHA256 = "ae1e99fcefd534ed978cdeb8326f08030c96e28b7a81ffcbc98a857c84d14be1"  # facebook/dinov2-small
_HF_RENAMES = [  # Hugging Face Dinov2Model key -> Meta key (query/key/value are fused separately)
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.mask_token", "mask_token"),
    (r"embeddings\.register_tokens", "register_tokens"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"encoder\.layer\.(\d+)\.mlp\.weights_in\.(weight|bias)", r"blocks.\1.mlp.w12.\2"),  # ViT-g SwiGLU
    (r"encoder\.layer\.(\d+)\.mlp\.weights_out\.(weight|bias)", r"blocks.\1.mlp.w3.\2"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
]
_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)")


def where_to_get_weights(variant: str) -> str:
    """The one-line hint for obtaining real weights for `variant` (Meta's file or Hugging Face's)."""
    arch, reg = variant.removesuffix("_reg"), variant.endswith("_reg")
    meta = f"dinov2_{arch}{'_reg4' if reg else ''}_pretrain.pth"
    hf = f"facebook/dinov2-{'with-registers-' if reg else ''}{_HF_NAMES[arch[3]]}"
    return (
        f"pass --encoder-weights FILE with Meta's {meta} (https://dl.fbaipublicfiles.com/dinov2/dinov2_{arch}/{meta})"
        f" or Hugging Face {hf} model.safetensors, or run once online so timm caches them"
    )


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (weights files can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _claims_hf_dinov2_small(path: Path) -> bool:
    """A `model.safetensors` whose path or sibling config.json says it is facebook/dinov2-small (not a fine-tune)."""
    if re.search(r"dinov2-small(?![\w-])", str(path)):
        return True
    try:
        config = json.loads((path.parent / "config.json").read_text())
    except (OSError, ValueError):
        return False
    model_ok = "Dinov2Model" in config.get("architectures", ["Dinov2Model"])  # not a task head or fine-tune
    return config.get("model_type") == "dinov2" and config.get("hidden_size") == 384 and model_ok


def _check_official(path: Path, sha: str) -> None:
    expected, claim = _OFFICIAL_SHA256.get(path.name), path.name
    if expected is None and path.name == "model.safetensors" and _claims_hf_dinov2_small(path):
        expected, claim = _HF_SMALL_SHA256, "facebook/dinov2-small model.safetensors"
    if expected is not None and sha != expected:
        raise WMError(
            f"{path} is named as the official {claim} but is not it (sha256 {sha[:12]}..., expected"
            f" {expected[:12]}...); re-download it, or rename it if it is deliberately another checkpoint"
        )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .pth/.pt/.bin file (never full unpickling), unwrapped and de-prefixed."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip/header/EOF errors of a damaged file, or pickled objects other than tensors
        if "weights_only" in str(e):
            raise WMError(
                f"cannot read {path} (it pickles Python objects, not only tensors); save its state_dict()"
            ) from e
        raise WMError(
            f"cannot read {path} (truncated or not a weights file: {type(e).__name__}); re-download it"
        ) from e
    for wrapper in ("model", "state_dict", "teacher"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise WMError(f"{path} holds a {type(state).__name__}, not a state dict of tensors; pass a DINOv2 weights file")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "backbone.", "dinov2."):  # DDP, DINOv2 training checkpoints, HF task models
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _detect_layout(state: dict[str, torch.Tensor]) -> str:
    if any(k.startswith(("embeddings.", "encoder.layer.")) for k in state):
        return "hf"
    if "mask_token" in state or "register_tokens" in state or any(".mlp.w12." in k for k in state):
        return "meta"
    if "cls_token" in state and any(k.startswith("blocks.") for k in state):
        return "timm"
    return "unknown"


def _hf_to_meta(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face Dinov2Model names -> Meta names; query, key, value concatenated (in that order) into qkv."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if m := _QKV.fullmatch(key):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
            continue
        for pattern, repl in _HF_RENAMES:
            if re.fullmatch(pattern, key):
                key = re.sub(pattern, repl, key)
                break
        out[key] = value
    for (layer, kind), parts in qkv.items():
        if set(parts) == {"query", "key", "value"}:
            out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
        else:  # leave the incomplete triple under its HF names so the strict check names it
            out.update({f"encoder.layer.{layer}.attention.attention.{p}.{kind}": v for p, v in parts.items()})
    return out


def _meta_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta names -> timm names: drop mask_token, fc1/fc2 for ViT-g's w12/w3, fold the CLS position into the CLS
    token for register models (timm's `no_embed_class`: the position table then covers patches only)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "mask_token":
            continue
        key = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key)  # checkpoints saved with block_chunks > 0
        out[key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")] = value
    if "register_tokens" in out:
        out["reg_token"] = out.pop("register_tokens")
        if "pos_embed" in out and "cls_token" in out:
            pos = out.pop("pos_embed")
            out["cls_token"] = out["cls_token"] + pos[:, :1]
            out["pos_embed"] = pos[:, 1:]
    return out


def _resample_pos_embed(pos: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """pos (1, [1 +] M*M, D) -> (1, [1 +] g*g, D) for the model's g x g grid, the way DINOv2's hub models do it."""
    length, grid = pos.shape[1], model.patch_embed.grid_size[0]
    prefix = 0 if math.isqrt(length) ** 2 == length else 1
    side = math.isqrt(length - prefix)
    if side * side != length - prefix or side == grid:
        return pos  # already fits, or not a square table (the strict check reports it)
    table = pos[:, prefix:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if getattr(model, "num_reg_tokens", 0):  # DINOv2 register models: interpolate_offset 0, antialias on
        table = F.interpolate(table, size=(grid, grid), mode="bicubic", antialias=True)
    else:  # plain DINOv2 models: interpolate_offset 0.1, antialias off (the original "historical kludge")
        scale = (grid + 0.1) / side
        table = F.interpolate(table, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    assert table.shape[-2:] == (grid, grid), table.shape
    table = table.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)
    return torch.cat([pos[:, :prefix], table], dim=1)


def _variant_of(state: dict[str, torch.Tensor]) -> str:
    """The DINOv2 variant a timm-layout state dict belongs to, e.g. 'vitb14_reg', judged by width and registers."""
    weight = state.get("patch_embed.proj.weight")
    size = _DIM_TO_SIZE.get(weight.shape[0]) if weight is not None else None
    return f"vit{size}14" + ("_reg" if "reg_token" in state else "") if size else "no DINOv2 ViT"


def load_timm_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, layout: str) -> None:
    """Resample positions, check every key and shape against `model`, then load strictly (or raise WMError)."""
    target = model.state_dict()
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if "pos_embed" in state:
        state["pos_embed"] = _resample_pos_embed(state["pos_embed"], model)
    if not any(k.startswith("head.") for k in target):
        state = {k: v for k, v in state.items() if not k.startswith("head.")}  # a classifier head is not used
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or shapes:
        want, have = _variant_of(target), _variant_of(state)
        hint = (
            f"the file seems to be for {have}: use variant {have!r}"
            if have != want and have in DINOV2_VARIANTS
            else "the file is from another model or damaged; re-download it"
        )
        problems = [
            f"{name} {items[:3]}{' ...' if len(items) > 3 else ''}"
            for name, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if items
        ]
        raise WMError(f"{source} ({layout} layout) does not fit DINOv2 {want}: {'; '.join(problems)}; {hint}")
    model.load_state_dict(state, strict=True)


def load_dinov2_weights(model: nn.Module, path: str | Path) -> str:
    """Load a DINOv2 weights file (Meta .pth, Hugging Face .safetensors or timm layout) into a timm DINOv2 model.

    Checks official file names against their published sha256, maps keys to timm's, resamples the position table to
    the model's grid and loads strictly. Returns the file's sha256 (hex). Raises WMError with the fix on any problem.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WMError(f"DINOv2 weights file {path} does not exist; check the path given to --encoder-weights")
    sha = sha256_file(path)
    _check_official(path, sha)
    state = _read_state_dict(path)
    layout = _detect_layout(state)
    if layout == "unknown":
        raise WMError(
            f"{path} is not a DINOv2 checkpoint (first keys {list(state)[:3]}); "
            f"pass Meta's dinov2_*_pretrain.pth, Hugging Face's model.safetensors or a timm state dict"
        )
    if layout != "timm":
        state = _meta_to_timm(_hf_to_meta(state) if layout == "hf" else state)
    load_timm_state(model, state, str(path), layout)
    return sha


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes and bytes of a state dict (timm's pretrained weights come without a file)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(f"{key}{tuple(value.shape)}{value.dtype}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def skeleton(name: str, **kwargs) -> nn.Module:
    """The timm model with uninitialised parameters (skips a slow random init; every tensor is then loaded)."""
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    return timm.create_model(name, **kwargs) if list(model.buffers()) else model.to_empty(device="cpu")
