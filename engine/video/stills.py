"""Stills from the pass's own frames: at asked times, and one representative frame.

The representative ("best") frame is the best scoring of a sample spread over the video: not
black, not white, not flat, and the sharpest. Stills leave as upright 8-bit sRGB images, for
the image pipeline to render posters from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import av
import numpy as np
import pyvips

# A still for "best" is chosen among about this many frames spread over the video.
BEST_FRAME_SAMPLES = 24


@dataclass
class Stills:
    """Frames kept for posters: at asked times, and the best-scoring of a sample."""

    times: list[float]
    best: bool
    step_s: float
    picked: dict[float | str, av.VideoFrame] = field(default_factory=dict)
    best_score: float = -math.inf
    next_sample: float = 0.0
    last: av.VideoFrame | None = None

    @classmethod
    def wanted(cls, frames: list[float | str], duration_s: float | None) -> Stills:
        """Stills for these selectors (times in seconds, "best") of a video this long."""
        duration = duration_s or 0.0
        return cls(
            times=sorted(f for f in frames if isinstance(f, float)), best="best" in frames,
            step_s=max(0.25, duration / BEST_FRAME_SAMPLES) if duration else 1.0,
        )

    def offer(self, frame: av.VideoFrame, t: float) -> None:
        self.last = frame
        for at in self.times:
            if at not in self.picked and t + 1e-6 >= at:
                self.picked[at] = frame
        if self.best and t + 1e-6 >= self.next_sample:
            self.next_sample = t + self.step_s
            score = frame_score(frame)
            if score > self.best_score:
                self.best_score, self.picked["best"] = score, frame

    def images(self, rotation: int) -> dict[float | str, pyvips.Image]:
        wanted: list[float | str] = [*self.times, *(["best"] if self.best else [])]
        out = {}
        for key in wanted:
            frame = self.picked.get(key, self.last)  # a time past the end: the last frame
            if frame is not None:
                out[key] = _upright_srgb(frame, rotation)
        return out


def frame_score(frame: av.VideoFrame) -> float:
    """How good a poster this frame makes: sharp detail, and not black, white or flat.

    Sharpness is the variance of a Laplacian on a small grey copy; frames that are nearly one
    colour (a fade, a black leader) score below every other frame.
    """
    width = min(256, frame.width)
    height = max(2, round(frame.height * width / frame.width))
    grey = frame.reformat(width=width, height=height, format="gray").to_ndarray().astype(np.float32)
    mean, spread = float(grey.mean()), float(grey.std())
    if mean < 24 or mean > 235 or spread < 12:
        return spread - 1000.0
    lap = (4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1]
           - grey[1:-1, :-2] - grey[1:-1, 2:])
    return float(lap.var())


def _upright_srgb(frame: av.VideoFrame, rotation: int) -> pyvips.Image:
    array = frame.to_ndarray(format="rgb24")
    h, w = array.shape[:2]
    image = pyvips.Image.new_from_memory(array.tobytes(), w, h, 3, "uchar")
    turn = {90: "d270", 180: "d180", 270: "d90"}.get(rotation % 360)
    if turn is not None:
        image = image.rot(turn)
    return image.copy(interpretation="srgb").copy_memory()
