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

from .. import formats
from ..errors import MasterError, NotApplicable
from ..geometry import Box, Framing, Layout, video_layout
from ..spec.models import Resize, VideoPreset, upscale_limit
from .encoders import ANIMATION_OPTIONS, encoder_settings, open_video_output, save_animation
from .filters import Chain, branch_filters, drain, focus_crop
from .probe import VideoFacts, av_message, describe_output


@dataclass(frozen=True)
class VideoRendered:
    path: Path  # in the work folder; the caller publishes it
    facts: VideoFacts
    render_ms: float
    source: tuple[int, int] | None = None  # the master's upright frame size
    region: Box | None = None  # the part of the master's frame the output shows
    scale: float | None = None  # output pixels per master pixel
    crop_by: str | None = None  # the gravity of a fill crop; None: the whole frame is shown
    encoder: str | None = None  # the encoder and its options, as text


def _enlarges(plan: Layout, size: tuple[int, int], limit: float = 1.0) -> bool:
    """The plan scales the frame by more than `limit` (2 px of slack: sizes are even)."""
    return plan.scaled[0] > size[0] * limit + 2 or plan.scaled[1] > size[1] * limit + 2


def _factor(plan: Layout, size: tuple[int, int]) -> float:
    return max(plan.scaled[0] / size[0], plan.scaled[1] / size[1])


def _capped(resize: Resize, factor: float) -> Resize:
    """The rung's box shrunk by `factor`, so the frame is shown at (about) its own size."""
    def side(v: int | None) -> int | None:
        return None if v is None else max(2, int(v / factor) // 2 * 2)
    return resize.model_copy(update={"width": side(resize.width), "height": side(resize.height)})


def plan_for(preset: VideoPreset, size: tuple[int, int]) -> tuple[Layout, MasterError | None]:
    """The branch's geometry, or why it is not made.

    A ladder rung never enlarges: a rung above the master's size is not applicable, except the
    smallest such rung when no smaller rung reaches the master's size: it is made at the
    master's own size (the top rung). Any other preset enlarges at most as its `upscale` says.
    """
    plan = video_layout(size[0], size[1], preset.resize)
    w, h = size
    if preset.rung_below is not None:
        if not _enlarges(plan, size):
            return plan, None
        below = preset.rung_below
        if below != (None, None):
            lower = video_layout(w, h, preset.resize.model_copy(
                update={"width": below[0], "height": below[1]}))
            if lower.scaled[0] >= w - 2 or lower.scaled[1] >= h - 2:  # it reaches the master
                return plan, NotApplicable(
                    f"not applicable: this rung ({plan.canvas[0]}x{plan.canvas[1]}) would "
                    f"upscale the {w}x{h} master {_factor(plan, size):.2f}x; a smaller rung "
                    "shows it at its own size")
        return video_layout(w, h, _capped(preset.resize, _factor(plan, size))), None
    limit = upscale_limit(preset.upscale)
    if limit is not None and _enlarges(plan, size, limit):
        return plan, MasterError(
            f"would upscale {w}x{h} to {plan.canvas[0]}x{plan.canvas[1]} "
            f"({_factor(plan, size):.2f}x, preset allows at most {limit:g}x)")
    return plan, None


def shown_region(plan: Layout, size: tuple[int, int]) -> Box:
    """The part of the (upright) master frame a plan shows, in master pixels."""
    if plan.crop is None:
        return Box(0, 0, size[0], size[1])
    sx, sy = plan.scaled[0] / size[0], plan.scaled[1] / size[1]
    c = plan.crop
    w, h = min(size[0], round(c.width / sx)), min(size[1], round(c.height / sy))
    return Box(min(size[0] - w, round(c.left / sx)), min(size[1] - h, round(c.top / sy)), w, h)


def describe_encoder(preset: VideoPreset, rate: Fraction) -> str:
    """The video encoder (or the animation saver) and its options, then the audio encoder."""
    if preset.animated:
        options = ANIMATION_OPTIONS[preset.format](preset)
        saver = formats.output(preset.format).saver or preset.format
        return " ".join([saver, *(f"{k}={int(v) if isinstance(v, bool) else v}"
                                  for k, v in options.items() if k != "keep")])
    encoder, opts = encoder_settings(preset, rate)
    text = " ".join([encoder, *(f"{k}={v}" for k, v in opts.items())])
    if preset.effective_audio != "none":
        audio = formats.CODECS[preset.effective_audio].encoder
        text += (f"; {audio} b={preset.audio_bitrate_kbps}k "
                 f"ar={preset.audio_sample_rate}")
    return text


class Branch:
    """One video or animated output: its branch of the filter graph and its encoder.

    `filters()` and `encoders.encoder_settings()` are the whole recipe, so a benchmark can hand
    the same chain and options to the ffmpeg command line.
    """

    def __init__(self, recipe: str, preset: VideoPreset, size: tuple[int, int],
                 fps_in: Fraction | None, tb_in: Fraction, workdir: Path,
                 framing: Framing | None = None) -> None:
        self.recipe, self.preset = recipe, preset
        self.error: MasterError | None = None
        self.busy_s = 0.0
        self.path = workdir / f"{recipe}.{preset.extension}"
        self.size = size
        self.plan, self.error = plan_for(preset, size)  # an error: this output is not made
        self.crop_by = preset.resize.gravity  # how a fill crop is placed (lineage)
        if framing is not None and framing.focus is not None:  # the editor's focal point
            self.plan = focus_crop(self.plan, framing.focus)
            self.crop_by = "focus"
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
        if self.preset.animated or self.error is not None:
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
        return VideoRendered(
            self.path, facts, self.busy_s * 1000, source=self.size,
            region=shown_region(self.plan, self.size), scale=self.plan.scaled[0] / self.size[0],
            crop_by=self.crop_by if self.plan.crop is not None else None,
            encoder=describe_encoder(self.preset, self.rate))
