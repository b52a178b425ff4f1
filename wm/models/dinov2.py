"""The frozen DINOv2 encoder of the DINO-WM recipe: images -> patch tokens, with weights that load offline.

`DinoV2Encoder(images (B, 3, H, W) float in [0, 1]) -> tokens (B, N, D) float32`, N = (image_size / 14)^2 patch
tokens (or pool^2 after average pooling the patch grid), plus the CLS token first when `use_cls=True`. DINO-WM used
ViT-S/14 (D = 384) patch tokens at 196 px (14 x 14 = 196 tokens) with inputs scaled to [-1, 1].

Weights come from timm's pretrained source (network once) or a local file in one of three layouts, told apart by
their keys and mapped onto timm's `VisionTransformer`: Meta's `dinov2_vit*14*_pretrain.pth` (`ls1.gamma`,
`mask_token`, `register_tokens`), Hugging Face `Dinov2Model` `model.safetensors` (`embeddings.*`, `encoder.layer.*`,
query/key/value fused into timm's `qkv`) or timm's own `state_dict()`. The 37x37 position table is resampled once,
exactly as DINOv2's torch.hub models do on every forward, so features match the models DINO-WM used.
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
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # what DINOv2 was trained with
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [0, 1] -> [-1, 1], what DINO-WM used
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


def _load_timm_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, layout: str) -> None:
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
    _load_timm_state(model, state, str(path), layout)
    return sha


def _state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes and bytes of a state dict (timm's pretrained weights come without a file)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(f"{key}{tuple(value.shape)}{value.dtype}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _skeleton(name: str, **kwargs) -> nn.Module:
    """The timm model with uninitialised parameters (skips a slow random init; every tensor is then loaded)."""
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    return timm.create_model(name, **kwargs) if list(model.buffers()) else model.to_empty(device="cpu")


class DinoV2Encoder(nn.Module):
    """Frozen DINOv2 ViT: `forward(images (B, 3, H, W) float in [0, 1]) -> tokens (B, N, D) float32`.

    Images of any H, W (uint8 is scaled by 1/255) are resized bilinearly (antialiased) to `image_size` (a multiple
    of 14), normalised and encoded; out come the final-norm patch tokens, row-major over the (image_size/14)^2 grid,
    average-pooled to pool x pool when `pool` is set, CLS first when `use_cls` (N + 1); never register tokens.
    normalize: "imagenet" = mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), what DINOv2 was trained with;
    "half" = mean 0.5, std 0.5, i.e. [0, 1] -> [-1, 1], what DINO-WM used.
    weights: None tries timm's pretrained source (network, or timm's cache) and otherwise raises a WMError saying
    how to get a file; a path loads that file (`load_dinov2_weights`); "random" keeps a seeded random init that is NOT
    a real encoder (tests and smoke runs only). Always in eval mode, no trainable parameters, forward under
    `torch.no_grad()` (not inference mode, so its outputs may feed a model that is being trained).
    """

    def __init__(
        self,
        variant: str = "vits14",
        image_size: int = 224,
        pool: int | None = None,
        use_cls: bool = False,
        weights: str | Path | None = None,
        normalize: str = "imagenet",
    ):
        super().__init__()
        if variant not in DINOV2_VARIANTS:
            raise WMError(f"unknown DINOv2 variant {variant!r}; choose one of {', '.join(DINOV2_VARIANTS)}")
        if not isinstance(image_size, int) or image_size <= 0 or image_size % PATCH_SIZE:
            lower = (int(image_size) // PATCH_SIZE) * PATCH_SIZE if isinstance(image_size, int) else 0
            nearest = f"{lower} or {lower + PATCH_SIZE}" if lower > 0 else f"{lower + PATCH_SIZE}"
            raise WMError(f"DINOv2 image_size {image_size!r} is not a multiple of the patch size 14; use {nearest}")
        grid = image_size // PATCH_SIZE
        if pool is not None and (not isinstance(pool, int) or pool <= 0 or grid % pool):
            options = [d for d in range(1, grid + 1) if grid % d == 0]
            raise WMError(f"pool={pool!r} must divide the {grid}x{grid} patch grid of {image_size} px; use {options}")
        if normalize not in NORMALIZATIONS:
            raise WMError(f"unknown normalize {normalize!r}; use 'imagenet' (DINOv2's) or 'half' (DINO-WM's [-1, 1])")
        self.variant, self.image_size, self.grid = variant, image_size, grid
        self.pool, self.use_cls, self.normalize = pool, bool(use_cls), normalize
        self._weights = None if weights is None else str(weights)
        self.model, self._weights_sha256 = self._build(weights)
        self.model.requires_grad_(False)
        mean, std = NORMALIZATIONS[normalize]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        super().train(False)

    @classmethod
    def from_config(cls, settings: dict, image_size: int) -> DinoV2Encoder:
        """The encoder of a world model from its `settings` (this class's arguments); its input size is its own
        `image_size` setting (frames of the model's `image_size` are resized to it)."""
        try:
            return cls(**settings)
        except TypeError as e:
            raise WMError(f"bad DINOv2 encoder setting: {e}") from None

    def settings(self) -> dict:
        """Every setting of this encoder (what `from_config` takes)."""
        return {
            "variant": self.variant,
            "image_size": self.image_size,
            "pool": self.pool,
            "use_cls": self.use_cls,
            "weights": self._weights,
            "normalize": self.normalize,
        }

    def _build(self, weights: str | Path | None) -> tuple[nn.Module, str]:
        name = DINOV2_VARIANTS[self.variant]
        kwargs = {"pretrained": False, "img_size": self.image_size, "num_classes": 0}
        if isinstance(weights, str) and weights == "random":
            with torch.random.fork_rng(devices=[]):  # seeded, so "random" names one fixed set of weights
                torch.manual_seed(0)
                return timm.create_model(name, **kwargs), "random"
        if weights is not None:
            model = _skeleton(name, **kwargs)
            return model, load_dinov2_weights(model, weights)
        try:
            hub = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as e:  # offline, hub unreachable, cache empty
            raise WMError(
                f"no DINOv2 weights are available offline for {self.variant} (timm could not fetch {name}:"
                f" {type(e).__name__}); {where_to_get_weights(self.variant)}"
            ) from e
        state, model = hub.state_dict(), _skeleton(name, **kwargs)
        _load_timm_state(model, state, f"timm pretrained {name}", "timm")
        return model, _state_sha256(state)  # no file to hash: hash the tensors

    def train(self, mode: bool = True) -> DinoV2Encoder:
        """Frozen: stays in eval mode whatever `mode` says."""
        return super().train(False)

    @property
    def num_tokens(self) -> int:
        """N of the output (B, N, D): patches (or pool^2) plus one when the CLS token is returned."""
        return (self.pool or self.grid) ** 2 + int(self.use_cls)

    @property
    def dim(self) -> int:
        """D of the output: 384 (S), 768 (B), 1024 (L), 1536 (g)."""
        return int(self.model.embed_dim)

    @property
    def weights_sha256(self) -> str:
        """Hex sha256 of the loaded weights file (of the tensors for timm's pretrained source), or "random"."""
        return self._weights_sha256

    @property
    def encoder_id(self) -> str:
        """Identifies these features exactly (for cache keys): variant, size, pooling, CLS, normalisation, weights."""
        tokens = f"pool{self.pool}" if self.pool else f"grid{self.grid}"
        return (
            f"dinov2-{self.variant}-{self.image_size}px-{tokens}-{'cls' if self.use_cls else 'nocls'}"
            f"-{self.normalize}-{self._weights_sha256[:12]}"
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) float in [0, 1] -> tokens (B, num_tokens, dim) float32."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise WMError(
                f"DinoV2Encoder expects images (B, 3, H, W), got {tuple(images.shape)}; "
                "permute channels-last frames with x.permute(0, 3, 1, 2)"
            )
        if not images.is_floating_point() and images.dtype != torch.uint8:
            raise WMError(f"DinoV2Encoder expects float images in [0, 1] or uint8, got {images.dtype}")
        with torch.no_grad():
            x = images.to(self.mean.device, torch.float32)
            if images.dtype == torch.uint8:
                x = x / 255.0
            if x.shape[-2:] != (self.image_size, self.image_size):
                x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
            x = (x - self.mean) / self.std
            tokens = self.model.forward_features(x.to(self.model.cls_token.dtype)).float()
            cls, patches = tokens[:, :1], tokens[:, self.model.num_prefix_tokens :]
            if self.pool and self.pool != self.grid:  # (B, g*g, D) -> (B, D, g, g) -> (B, pool*pool, D)
                b, _, d = patches.shape
                patch_grid = patches.transpose(1, 2).reshape(b, d, self.grid, self.grid)
                patches = F.avg_pool2d(patch_grid, self.grid // self.pool).flatten(2).transpose(1, 2)
            return torch.cat([cls, patches], dim=1) if self.use_cls else patches.contiguous()
