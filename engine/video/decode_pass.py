"""Walk one video master: one demux and decode pass feeds every video output, preview and still.

  demux ─> decode (threaded) ─> monotonic pts, from 0 ─> filter graph (filters.py):
      buffer ─> [rotate upright] ─> split=N ─> per output: trim ─> fps cap ─> scale ─> crop
      ─> pad ─> format ─> buffersink ─> encoder (x264, x265, libvpx-vp9, SVT-AV1) ─> muxer
      (MP4 with the index first, or WebM) (encoders.py, branch.py), or frames collected for an
      animated GIF/WebP
  audio (audio.py): decoded once ─> per distinct audio setting, resampled and encoded once; the
         packets go into every output with that setting
  stills (stills.py): frames at asked times and one representative frame (not black, not flat,
          sharpest of a sample) ─> upright 8-bit sRGB images for the image pipeline

Outputs are written to a local work folder; the caller publishes them. One output that fails
(an encoder that refuses a size, say) fails alone; a master that cannot be decoded fails whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import pyvips

from ..errors import MasterError
from ..geometry import Framing
from ..spec.models import VideoPreset
from .audio import AudioTrack, audio_tracks
from .branch import Branch, VideoRendered
from .filters import frame_rotation, split_graph
from .probe import (
    DEFAULT_MAX_VIDEO_PIXELS,
    DEFAULT_MAX_VIDEO_S,
    Source,
    av_message,
    describe_source,
    open_master,
)
from .stills import Stills

# A decoded stream this much shorter than its container says was cut short.
TRUNCATION_SLACK = 0.05


@dataclass
class VideoPass:
    results: dict[str, VideoRendered | MasterError]  # recipe hash -> output
    stills: dict[float | str, pyvips.Image]  # frame selector -> upright sRGB image
    decode_ms: float  # the whole pass: demux, decode, filter, encode


class _Pass:
    """State of one decode pass: built on the first frame (size, rotation, pixel format)."""

    def __init__(self, container: av.container.InputContainer, source: Source,
                 presets: dict[str, VideoPreset], frames: list[float | str], workdir: Path,
                 framings: dict[str, Framing] | None = None) -> None:
        self.container, self.source = container, source
        self.presets, self.workdir = presets, workdir
        self.framings = framings or {}
        self.vstream = container.streams.video[0]
        self.vstream.thread_type = "AUTO"
        self.astream = container.streams.audio[0] if container.streams.audio else None
        self.outputs: list[Branch] = []
        self.refused: dict[str, MasterError] = {}
        self.tracks: list[AudioTrack] = []
        self.graph: av.filter.Graph | None = None
        self.src: av.filter.context.FilterContext | None = None
        self.fmt: tuple[int, int, str] | None = None
        self.rotation = 0
        self.origin: int | None = None
        self.last_pts: int | None = None
        self.end_s = 0.0
        self.pending_audio: list[av.AudioFrame] = []
        self.stills = Stills.wanted(frames, source.duration_s)

    def _build(self, frame: av.VideoFrame) -> None:
        self.rotation = frame_rotation(frame)
        self.fmt = (frame.width, frame.height, frame.format.name)
        upright = (frame.width, frame.height)
        if self.rotation % 180:
            upright = (frame.height, frame.width)
        tb = self.vstream.time_base or Fraction(1, 90000)
        branches = [Branch(r, p, upright, self.source.fps, tb, self.workdir,
                           self.framings.get(r))
                    for r, p in self.presets.items()]
        # An output refused before any frame (an upscale, a rung above the master) is no branch.
        self.refused = {b.recipe: b.error for b in branches if b.error is not None}
        self.outputs = [b for b in branches if b.error is None]
        for out in self.outputs:
            out.open()
        if self.outputs:
            self.graph, self.src, sinks = split_graph(
                frame.width, frame.height, frame.format.name, tb, self.rotation,
                [out.filters() for out in self.outputs],
            )
            for out, sink in zip(self.outputs, sinks, strict=True):
                out.sink = sink
        if self.astream is not None:
            self.tracks = audio_tracks(self.outputs, self.source.audio_channels)
        for audio in self.pending_audio:
            self._audio(audio)
        self.pending_audio = []

    def video(self, frame: av.VideoFrame) -> None:
        if self.fmt is None:
            self.origin = frame.pts if frame.pts is not None else 0  # before queued audio
            self._build(frame)
        tb = self.vstream.time_base or Fraction(1, 90000)
        if frame.pts is None:  # no timestamp: one frame after the last
            step = round(1 / (self.source.fps or 30) / tb)
            frame.pts = (self.last_pts if self.last_pts is not None else self.origin or 0) + step
        if self.last_pts is not None and frame.pts <= self.last_pts:
            return  # a repeated or backwards timestamp (broken VFR): encoders need them rising
        self.last_pts = frame.pts
        assert self.origin is not None and self.fmt is not None
        frame.pts -= self.origin
        t = float(frame.pts * tb)
        self.end_s = max(self.end_s, t + 1 / float(self.source.fps or 30))
        self.stills.offer(frame, t)
        if self.src is None:
            return
        if (frame.width, frame.height, frame.format.name) != self.fmt:
            frame = frame.reformat(width=self.fmt[0], height=self.fmt[1], format=self.fmt[2])
            frame.pts = self.last_pts - self.origin
        frame.time_base = tb
        self.src.push(frame)
        for out in self.outputs:
            out.take()

    def audio(self, frame: av.AudioFrame) -> None:
        if self.fmt is None:
            self.pending_audio.append(frame)
        else:
            self._audio(frame)

    def _audio(self, frame: av.AudioFrame) -> None:
        if not self.tracks or frame.pts is None or self.astream is None:
            return
        origin_s = float((self.origin or 0) * (self.vstream.time_base or 1))
        shift = round(origin_s / frame.time_base) if frame.time_base else 0
        if frame.pts - shift < 0:
            return  # audio before the first picture: dropped, as the picture starts at 0
        frame.pts -= shift
        for track in self.tracks:
            track.push(frame)

    def finish(self) -> dict[str, VideoRendered | MasterError]:
        if self.src is not None:
            self.src.push(None)
            for out in self.outputs:
                out.take()
        for track in self.tracks:
            track.push(None)
        done: dict[str, VideoRendered | MasterError] = dict(self.refused)
        done.update({out.recipe: out.finish() for out in self.outputs})
        return done


def render_video(
    data: bytes | BinaryIO,
    presets: dict[str, VideoPreset],
    frames: list[float | str],
    workdir: Path,
    max_pixels: int = DEFAULT_MAX_VIDEO_PIXELS,
    max_duration_s: float = DEFAULT_MAX_VIDEO_S,
    framings: dict[str, Framing] | None = None,
) -> VideoPass:
    """Every video recipe (keyed by recipe hash) and every still of one master, in one pass.

    Raises MasterError when the master itself cannot be read: not a video, no video stream, no
    frames, corrupt or truncated data, over the limits.
    """
    start = time.perf_counter()
    container = open_master(data)
    try:
        source = describe_source(container, max_pixels, max_duration_s)
        state = _Pass(container, source, presets, frames, workdir, framings)
        streams = [s for s in (state.vstream, state.astream) if s is not None]
        try:
            for packet in container.demux(*streams):
                is_video = packet.stream.index == state.vstream.index
                for frame in packet.decode():
                    if is_video:
                        state.video(frame)
                    else:
                        state.audio(frame)
            if state.fmt is None:
                raise MasterError("no video frames could be decoded (empty or zero duration)")
        except av.FFmpegError as exc:
            at = f" at {state.end_s:.2f} s" if state.fmt is not None else ""
            raise MasterError(f"corrupt video data{at}: {av_message(exc)}") from None
        claimed = source.duration_s
        if claimed and state.end_s < claimed * (1 - TRUNCATION_SLACK) - 0.1:
            raise MasterError(
                f"truncated: decoded {state.end_s:.2f} s of the {claimed:.2f} s the file claims"
            )
        results = state.finish()
        stills = state.stills.images(state.rotation)
    except BaseException:
        for out in getattr(locals().get("state"), "outputs", []):
            out.fail("the master failed")
        raise
    finally:
        container.close()
    return VideoPass(results, stills, (time.perf_counter() - start) * 1000)
