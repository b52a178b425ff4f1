"""Writing videos people can look at: clips side by side, upscaled with nearest-neighbour, saved as MP4."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np


def side_by_side(clips: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Same-length clips `[(T, H, W_i, 3) uint8]` joined left to right with white gaps `gap` px wide."""
    spacer = np.full((*clips[0].shape[:2], gap, 3), 255, np.uint8)
    return np.concatenate([c for clip in clips for c in (clip, spacer)][:-1], axis=2)


def upscale(clip: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of `(T, H, W, 3)` by an integer factor (keeps pixels crisp)."""
    return clip.repeat(factor, axis=1).repeat(factor, axis=2)


def write_mp4(path, clip: np.ndarray, fps: int = 10) -> Path:
    """Save `(T, H, W, 3)` uint8 as H.264 MP4 (dimensions padded to even sizes for the codec)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = clip.shape
    clip = np.pad(clip, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=255)
    imageio.mimwrite(path, list(clip), fps=fps, codec="libx264", quality=8, macro_block_size=1)
    return path
