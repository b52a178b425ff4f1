"""The trainable pixel encoder of the JEPA world model (LeWM recipe), built from timm backbones.

A small ViT (timm `VisionTransformer`, sized for 64 px on a CPU) or a small CNN (timm `resnet10t`) maps a frame
to features; the CLS token (ViT) or pooled map (CNN) — or, for `tokens > 1`, an average-pooled grid of patch
tokens (ViT) — goes through an MLP projector with BatchNorm to `out_dim`. Trained jointly with the predictor
under SIGReg; no pretrained weights, no EMA target, no stop-gradient.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from wm.errors import WMError


@dataclass
class PixelEncoderConfig:
    arch: str = "vit"  # "vit" (timm VisionTransformer) or "cnn" (timm resnet10t)
    image_size: int = 64
    patch_size: int = 16
    width: int = 96
    depth: int = 3
    heads: int = 4
    out_dim: int = 64
    tokens: int = 1  # 1 = CLS token (LeWM); a square number = pooled patch grid (ViT only)

    def __post_init__(self) -> None:
        sizes = {"patch_size": self.patch_size, "width": self.width, "depth": self.depth, "heads": self.heads,
                 "out_dim": self.out_dim, "tokens": self.tokens}  # fmt: skip
        bad = [f"{k}={v}" for k, v in sizes.items() if not isinstance(v, int) or v < 1]
        if bad:
            raise WMError(f"encoder setting {', '.join(bad)} must be a positive integer")
        if self.width > 4096 or self.depth > 48:
            raise WMError(f"encoder width={self.width}, depth={self.depth}: at most 4096 and 48 (ViT-g is 1536 x 40)")
        if self.width % self.heads:
            raise WMError(f"encoder width={self.width} must split into heads={self.heads} equal heads")


class PixelEncoder(nn.Module):
    """`forward(images (B, 3, H, W) float in [0, 1]) -> (B, tokens, out_dim)`. Inputs are scaled to [-1, 1]."""

    def __init__(self, cfg: PixelEncoderConfig):
        super().__init__()
        self.cfg = cfg
        side = math.isqrt(cfg.tokens)
        if side * side != cfg.tokens:
            raise WMError(f"encoder.tokens must be a square number (1, 4, 16, ...), got {cfg.tokens}")
        if cfg.arch == "vit":
            if cfg.image_size % cfg.patch_size:
                raise WMError(f"encoder.image_size {cfg.image_size} must be a multiple of patch_size {cfg.patch_size}")
            grid = cfg.image_size // cfg.patch_size
            if cfg.tokens > 1 and grid % side:
                raise WMError(f"encoder.tokens={cfg.tokens} needs a patch grid divisible by {side}; grid is {grid}")
            self.backbone = VisionTransformer(
                img_size=cfg.image_size,
                patch_size=cfg.patch_size,
                embed_dim=cfg.width,
                depth=cfg.depth,
                num_heads=cfg.heads,
                num_classes=0,
                class_token=True,
                global_pool="token",
            )
            feat_dim = cfg.width
        elif cfg.arch == "cnn":
            if cfg.tokens != 1:
                raise WMError("encoder.arch=cnn gives one token per frame; set encoder.tokens=1")
            self.backbone = timm.create_model("resnet10t", pretrained=False, num_classes=0)
            feat_dim = self.backbone.num_features
        else:
            raise WMError(f"encoder.arch must be 'vit' or 'cnn', got {cfg.arch!r}")
        self.projector = nn.Sequential(
            nn.Linear(feat_dim, 2 * cfg.out_dim),
            nn.BatchNorm1d(2 * cfg.out_dim),
            nn.GELU(),
            nn.Linear(2 * cfg.out_dim, cfg.out_dim),
        )

    @classmethod
    def from_config(cls, settings: dict, image_size: int) -> PixelEncoder:
        """The encoder of a world model: `settings` (PixelEncoderConfig fields) at the model's `image_size`."""
        try:
            return cls(PixelEncoderConfig(**{"image_size": image_size, **settings}))
        except TypeError as e:
            raise WMError(f"bad encoder setting: {e}; see PixelEncoderConfig") from None

    def settings(self) -> dict:
        """Every setting of this encoder (what `from_config` takes)."""
        return asdict(self.cfg)

    @property
    def num_tokens(self) -> int:
        return self.cfg.tokens

    @property
    def dim(self) -> int:
        return self.cfg.out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        size = self.cfg.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = images * 2.0 - 1.0
        if self.cfg.arch == "cnn":
            feats = self.backbone(x)[:, None]  # (B, 1, F)
        elif self.cfg.tokens == 1:
            feats = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)[:, None]
        else:
            patches = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens :]  # (B, G*G, F)
            grid = math.isqrt(patches.shape[1])
            side = math.isqrt(self.cfg.tokens)
            patches = patches.transpose(1, 2).reshape(b, -1, grid, grid)
            feats = F.adaptive_avg_pool2d(patches, side).flatten(2).transpose(1, 2)  # (B, tokens, F)
        out = self.projector(feats.reshape(-1, feats.shape[-1]))
        return out.reshape(b, self.cfg.tokens, self.cfg.out_dim)
