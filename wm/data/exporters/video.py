"""Writing frames as an H.264 mp4 through PyAV, frame i shown at i / fps, as LeRobot's video features expect."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

CRF = 12  # mean error ~2.4/255 at 64 px, set by yuv420p's chroma subsampling (2.25/255 even at crf 0; yuv444p
# gives 0.57/255, but LeRobot and most players decode yuv420p); LeRobot itself records with crf 30
GOP = 2  # a keyframe every 2 frames, as LeRobot encodes: random access decodes at most one extra frame


class Mp4Writer:
    """Append `(L, H, W, 3)` uint8 clips in order; `close()` (or leaving the `with` block) finishes the file."""

    def __init__(self, path: Path, fps: float, height: int, width: int):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self._container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1000)
        self._stream = self._container.add_stream("libx264", rate=rate, options={"crf": str(CRF), "g": str(GOP)})
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.time_base = 1 / rate

    def write(self, clip: np.ndarray) -> None:
        import av

        for image in clip:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            self._container.mux(self._stream.encode(frame))
            self.frames += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode())
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
