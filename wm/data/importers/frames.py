"""Source images to the store's rgb: uint8, channels last, square at the requested size."""

from __future__ import annotations

import numpy as np
from PIL import Image

from wm.errors import WMError


def is_image_shape(shape: tuple[int, ...]) -> bool:
    """Whether a per-frame shape is an RGB image: `(H, W, 3)` or `(3, H, W)`."""
    return len(shape) == 3 and (shape[-1] == 3 or shape[0] == 3)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """uint8 from uint8 as is, from floats in [0, 1] (scaled by 255) or in [0, 255] (as diffusion_policy's pusht
    keeps them), rounded and clipped."""
    if frames.dtype == np.uint8:
        return frames
    frames = np.asarray(frames, dtype=np.float32)
    scale = 255.0 if frames.size and float(frames.max()) <= 1.0 else 1.0
    return np.clip(np.round(frames * scale), 0, 255).astype(np.uint8)


def to_store_rgb(frames: np.ndarray, size: int, key: str) -> np.ndarray:
    """`(L, size, size, 3)` uint8 from `frames` `(L, H, W, 3)` or `(L, 3, H, W)`, any numeric dtype; resized with
    PIL's area-averaging filter where the size differs (the aspect ratio is not kept: the whole view stays)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or not is_image_shape(frames.shape[1:]):
        raise WMError(f"{key} frames have shape {frames.shape[1:]}; expected (H, W, 3) or (3, H, W) images")
    if frames.shape[-1] != 3:
        frames = np.moveaxis(frames, 1, -1)
    frames = to_uint8(frames)
    if frames.shape[1:3] == (size, size):
        return np.ascontiguousarray(frames)
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BOX)) for f in frames])
