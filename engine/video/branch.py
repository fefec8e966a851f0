"""One video or animated output of the pass: its branch of the filter graph, its encoder, its file.

A branch encodes every frame its chain lets through as soon as the sink has it (animated
outputs collect RGB frames and are saved at the end). A failure (an encoder that refuses a
size, say) ends this output only: its file is removed and the error is its result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyvips

from ..errors import MasterError
from ..geometry import video_layout
from ..spec.models import VideoPreset
from .encoders import open_video_output, save_animation
from .filters import Chain, branch_filters, drain
from .probe import VideoFacts, av_message, describe_output


@dataclass(frozen=True)
class VideoRendered:
    path: Path  # in the work folder; the caller publishes it
    facts: VideoFacts
    render_ms: float


class Branch:
    """One video or animated output: its branch of the filter graph and its encoder.

    `filters()` and `encoders.encoder_settings()` are the whole recipe, so a benchmark can hand
    the same chain and options to the ffmpeg command line.
    """

    def __init__(self, recipe: str, preset: VideoPreset, size: tuple[int, int],
                 fps_in: Fraction | None, tb_in: Fraction, workdir: Path) -> None:
        self.recipe, self.preset = recipe, preset
        self.error: MasterError | None = None
        self.busy_s = 0.0
        self.path = workdir / f"{recipe}.{preset.extension}"
        self.plan = video_layout(size[0], size[1], preset.resize)
        cap = Fraction(preset.fps_max).limit_denominator(1001) if preset.fps_max else None
        self.fps = cap if cap is not None and (fps_in is None or fps_in > cap * 1.02) else None
        self.tb = 1 / self.fps if self.fps is not None else tb_in
        self.rate = self.fps or fps_in or Fraction(30)
        self.frames: list[np.ndarray] = []
        self.sink: av.filter.context.FilterContext | None = None  # set once the graph is built
        self.container: av.container.OutputContainer | None = None
        self.stream: av.VideoStream | None = None
        self.audio_stream: av.AudioStream | None = None

    def open(self) -> None:
        """Open the output file and its encoder (animated outputs collect frames instead)."""
        if self.preset.animated:
            return
        self.container, self.stream = open_video_output(
            self.path, self.preset, self.rate, self.plan.canvas, self.tb
        )

    def filters(self) -> Chain:
        """This output's filter chain, as (filter, arguments), after the split."""
        return branch_filters(self.preset, self.plan, self.fps)

    def take(self) -> None:
        """Encode every frame the branch has ready (a failure ends this output only)."""
        assert self.sink is not None
        if self.error is not None:
            for _ in drain(self.sink):
                pass
            return
        start = time.perf_counter()
        try:
            for frame in drain(self.sink):
                if self.preset.animated:
                    self.frames.append(frame.to_ndarray())
                    continue
                frame.pict_type = av.video.frame.PictureType.NONE  # no forced keyframes
                assert self.container is not None and self.stream is not None
                self.container.mux(self.stream.encode(frame))
        except (av.FFmpegError, ValueError) as exc:
            self.fail(f"cannot encode {self.preset.effective_codec or self.preset.format}: "
                      f"{av_message(exc)}")
        self.busy_s += time.perf_counter() - start

    def mux_audio(self, packet: av.Packet) -> None:
        if self.error is None and self.container is not None:
            try:
                self.container.mux(packet)
            except (av.FFmpegError, ValueError) as exc:
                self.fail(f"cannot write audio: {av_message(exc)}")

    def fail(self, message: str) -> None:
        self.error = MasterError(message)
        self.frames = []
        if self.container is not None:
            try:
                self.container.close()
            except (av.FFmpegError, ValueError):
                pass
            self.container = None
        self.path.unlink(missing_ok=True)

    def finish(self) -> VideoRendered | MasterError:
        start = time.perf_counter()
        try:
            if self.error is None and self.preset.animated:
                save_animation(self.frames, self.path, self.preset, self.rate)
            elif self.error is None:
                assert self.container is not None and self.stream is not None
                self.container.mux(self.stream.encode(None))
                self.container.close()
                self.container = None
        except (av.FFmpegError, ValueError, pyvips.Error) as exc:
            self.fail(f"cannot finish {self.preset.format}: {av_message(exc)}")
        if self.error is not None:
            return self.error
        facts = describe_output(self.path, self.preset.format)
        if facts.frames == 0:
            self.fail("no frames in the asked time range (start_s beyond the video's end?)")
            return self.error or MasterError("no frames")
        self.busy_s += time.perf_counter() - start
        return VideoRendered(self.path, facts, self.busy_s * 1000)
