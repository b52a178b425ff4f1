"""The frozen DINOv2 encoder of the DINO-WM recipe: images -> patch tokens, with weights that load offline.

`DinoV2Encoder(images (B, 3, H, W) float in [0, 1]) -> tokens (B, N, D) float32`, N = (image_size / 14)^2 patch
tokens (or pool^2 after average pooling the patch grid), plus the CLS token first when `use_cls=True`. DINO-WM used
ViT-S/14 (D = 384) patch tokens at 196 px (14 x 14 = 196 tokens) with inputs scaled to [-1, 1].

Weights come from timm's pretrained source (network once) or a local file in Meta's, Hugging Face's or timm's
layout (`wm.models.dinov2_weights`) when a world model is made; its checkpoint then holds the encoder's tensors and
their hash (`weights_sha256` in the settings), so loading it reads neither the network nor that file.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from wm.errors import WMError
from wm.models.dinov2_weights import (
    DINOV2_VARIANTS,
    PATCH_SIZE,
    load_dinov2_weights,
    load_timm_state,
    skeleton,
    state_sha256,
    where_to_get_weights,
)

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # what DINOv2 was trained with
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [0, 1] -> [-1, 1], what DINO-WM used
}


class DinoV2Encoder(nn.Module):
    """Frozen DINOv2 ViT: `forward(images (B, 3, H, W) float in [0, 1]) -> tokens (B, N, D) float32`.

    Images of any H, W (uint8 is scaled by 1/255) are resized bilinearly (antialiased) to `image_size` (a multiple
    of 14), normalised and encoded; out come the final-norm patch tokens, row-major over the (image_size/14)^2 grid,
    average-pooled to pool x pool when `pool` is set, CLS first when `use_cls` (N + 1); never register tokens.
    normalize: "imagenet" = mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), what DINOv2 was trained with;
    "half" = mean 0.5, std 0.5, i.e. [0, 1] -> [-1, 1], what DINO-WM used.
    weights: None tries timm's pretrained source (network, or timm's cache) and otherwise raises a WMError saying
    how to get a file; a path loads that file (`load_dinov2_weights`); "random" keeps a seeded random init that is NOT
    a real encoder (tests and smoke runs only). weights_sha256: the hash of weights that the caller loads itself
    (a world-model checkpoint's `model.safetensors` holds them): the architecture is built uninitialised and
    `weights` is neither read nor fetched. Always in eval mode, no trainable parameters, forward under
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
        weights_sha256: str | None = None,
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
        self.model, self._weights_sha256 = self._build(weights, weights_sha256)
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
        """Every setting of this encoder (what `from_config` takes), the weights' hash included: rebuilt from these,
        the encoder expects its weights from the world model's checkpoint."""
        return {
            "variant": self.variant,
            "image_size": self.image_size,
            "pool": self.pool,
            "use_cls": self.use_cls,
            "weights": self._weights,
            "normalize": self.normalize,
            "weights_sha256": self._weights_sha256,
        }

    def _build(self, weights: str | Path | None, weights_sha256: str | None) -> tuple[nn.Module, str]:
        name = DINOV2_VARIANTS[self.variant]
        kwargs = {"pretrained": False, "img_size": self.image_size, "num_classes": 0}
        if weights_sha256 is not None:  # the checkpoint's tensors are loaded into it next
            return skeleton(name, **kwargs), weights_sha256
        if isinstance(weights, str) and weights == "random":
            with torch.random.fork_rng(devices=[]):  # seeded, so "random" names one fixed set of weights
                torch.manual_seed(0)
                return timm.create_model(name, **kwargs), "random"
        if weights is not None:
            model = skeleton(name, **kwargs)
            return model, load_dinov2_weights(model, weights)
        try:
            hub = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as e:  # offline, hub unreachable, cache empty
            raise WMError(
                f"no DINOv2 weights are available offline for {self.variant} (timm could not fetch {name}:"
                f" {type(e).__name__}); {where_to_get_weights(self.variant)}"
            ) from e
        state, model = hub.state_dict(), skeleton(name, **kwargs)
        load_timm_state(model, state, f"timm pretrained {name}", "timm")
        return model, state_sha256(state)  # no file to hash: hash the tensors

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
