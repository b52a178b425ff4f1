"""Reading frames out of an mp4 (any codec FFmpeg decodes) through PyAV, by timestamp."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wm.errors import WMError


def decode_at(path: Path, timestamps: np.ndarray, fps: float, size: int) -> np.ndarray:
    """`(L, size, size, 3)` uint8: for each of `timestamps` `(L,)` (seconds into the file) the decoded frame shown
    nearest to it, which must lie within half a frame (`0.5 / fps`); scaled to `size` x `size` by FFmpeg."""
    import av

    if not path.is_file():
        raise WMError(f"video {path} is missing; the dataset is incomplete")
    tol = 0.5 / fps
    first, last = float(timestamps.min()), float(timestamps.max())
    times, frames = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(int(max(first - tol, 0.0) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t < first - tol:
                    continue
                if t > last + tol:
                    break
                times.append(t)
                frames.append(frame.to_ndarray(width=size, height=size, format="rgb24", interpolation="AREA"))
    except av.error.FFmpegError as e:
        raise WMError(f"video {path} cannot be decoded ({e}); the file is damaged") from None
    if not times:
        raise WMError(f"video {path} has no frames between {first:.3f} and {last:.3f} s that the parquet rows need")
    gaps = np.abs(np.asarray(times)[None, :] - timestamps[:, None])  # (L, decoded)
    nearest = gaps.argmin(1)
    if np.any(gaps[np.arange(len(timestamps)), nearest] > tol):
        raise WMError(f"video {path} has no frame within {tol:.3f} s of some parquet rows' timestamps")
    return np.stack([frames[i] for i in nearest])
