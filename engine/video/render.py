"""Walk one video master: one demux and decode pass feeds every video output, preview and still.

  demux ─> decode (threaded) ─> monotonic pts, from 0 ─> filter graph:
      buffer ─> [rotate upright] ─> split=N ─> per output: trim ─> fps cap ─> scale ─> crop
      ─> pad ─> format ─> buffersink ─> encoder (x264, x265, libvpx-vp9, SVT-AV1) ─> muxer
      (MP4 with the index first, or WebM), or frames collected for an animated GIF/WebP
  audio: decoded once ─> per distinct audio setting, resampled and encoded once; the packets
         go into every output with that setting
  stills: frames at asked times and one representative frame (not black, not flat, sharpest
          of a sample) ─> upright 8-bit sRGB images for the image pipeline

Outputs are written to a local work folder; the caller publishes them. One output that fails
(an encoder that refuses a size, say) fails alone; a master that cannot be decoded fails whole.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import pyvips

from ..errors import MasterError
from ..geometry import video_layout
from ..spec.models import VideoPreset, parse_colour
from .probe import (
    DEFAULT_MAX_VIDEO_PIXELS,
    DEFAULT_MAX_VIDEO_S,
    Source,
    VideoFacts,
    av_message,
    describe_output,
    describe_source,
    open_master,
)

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise
# FFmpeg's log lines are dropped in C (PyAV's no-op callback). A level would install PyAV's
# Python callback, which takes the GIL for every error line: an x264 thread logging while an
# unflushed encoder is freed (a master that failed mid-pass) then waits for the GIL held by the
# thread that joins it, and the run hangs (seen in the truncated-video test, stacks via gdb).
# Errors still raise, with FFmpeg's error string.
av.logging.set_level(None)

ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus"}
VIDEO_ENGINE_ID = (
    f"fanout-video-1/avcodec-{'.'.join(map(str, av.library_versions['libavcodec']))}"
)
# A still for "best" is chosen among about this many frames spread over the video.
BEST_FRAME_SAMPLES = 24
# A decoded stream this much shorter than its container says was cut short.
TRUNCATION_SLACK = 0.05


@dataclass(frozen=True)
class VideoRendered:
    path: Path  # in the work folder; the caller publishes it
    facts: VideoFacts
    render_ms: float


@dataclass
class VideoPass:
    results: dict[str, VideoRendered | MasterError]  # recipe hash -> output
    stills: dict[float | str, pyvips.Image]  # frame selector -> upright sRGB image
    decode_ms: float  # the whole pass: demux, decode, filter, encode


def _drain(sink: av.filter.context.FilterContext) -> Iterator[av.VideoFrame]:
    while True:
        try:
            yield sink.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return


def _rotation_filters(rotation: int) -> list[tuple[str, str]]:
    """Filters that turn a frame with this display rotation (counter-clockwise) upright."""
    turn = rotation % 360
    if turn == 90:
        return [("transpose", "cclock")]
    if turn == 270:
        return [("transpose", "clock")]
    if turn == 180:
        return [("hflip", ""), ("vflip", "")]
    return []


def encoder_settings(p: VideoPreset, rate: Fraction) -> tuple[str, dict[str, str]]:
    """(FFmpeg encoder, its options) for a preset: rate control, GOP, speed."""
    codec = p.effective_codec
    assert codec is not None
    opts = {"g": str(max(1, round(p.keyframe_s * float(rate))))}
    if p.bitrate_kbps is not None:
        opts["b"] = f"{p.bitrate_kbps}k"
    if p.maxrate_kbps is not None:
        opts["maxrate"] = f"{p.maxrate_kbps}k"
        opts["bufsize"] = f"{p.effective_bufsize_kbps}k"
    crf, speed = p.effective_crf, p.effective_speed
    if codec in ("h264", "hevc"):
        opts["preset"] = speed or "fast"
        if crf is not None:
            opts["crf"] = str(crf)
        if codec == "hevc":
            opts["x265-params"] = "log-level=error"
    elif codec == "vp9":
        opts.update({"cpu-used": speed or "4", "row-mt": "1", "deadline": "good"})
        if crf is not None:
            opts.update({"crf": str(crf), "b": opts.get("b", "0")})
    else:  # av1 (SVT-AV1)
        opts["preset"] = speed or "8"
        if crf is not None:
            opts["crf"] = str(crf)
    return ENCODERS[codec], opts


class Branch:
    """One video or animated output: its branch of the filter graph and its encoder.

    `filters()` and `encoder_settings()` are the whole recipe, so a benchmark can hand the
    same chain and options to the ffmpeg command line.
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
        self.container: av.container.OutputContainer | None = None
        self.stream: av.VideoStream | None = None
        self.audio_stream: av.AudioStream | None = None

    def open(self) -> None:
        """Open the output file and its encoder (animated outputs collect frames instead)."""
        p = self.preset
        if p.animated:
            return
        options = {"mp4": {"movflags": "+faststart"}}.get(p.format, {})
        self.container = av.open(str(self.path), "w", format=p.format, container_options=options)
        encoder, opts = encoder_settings(p, self.rate)
        stream = self.container.add_stream(encoder, rate=self.rate)
        ctx = stream.codec_context
        ctx.width, ctx.height = self.plan.canvas
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = self.tb
        ctx.thread_type = "AUTO"
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 1, 1, 1, 1  # BT.709
        if p.effective_codec == "hevc":
            ctx.codec_tag = "hvc1"  # what Apple players look for in MP4
        stream.options = opts
        self.stream = stream

    def filters(self) -> list[tuple[str, str]]:
        """This output's filter chain, as (filter, arguments), after the split."""
        p, plan = self.preset, self.plan
        steps: list[tuple[str, str]] = []
        if p.start_s or p.max_duration_s:
            args = [f"start={p.start_s}"] if p.start_s else []
            if p.max_duration_s:
                args.append(f"duration={p.max_duration_s}")
            steps.append(("trim", ":".join(args)))
            if p.start_s:
                steps.append(("setpts", "PTS-STARTPTS"))
        if self.fps is not None:
            steps.append(("fps", f"fps={self.fps.numerator}/{self.fps.denominator}"))
        colour = "" if p.animated else ":out_color_matrix=bt709:out_range=tv"
        steps.append(("scale", f"w={plan.scaled[0]}:h={plan.scaled[1]}:flags=bicubic{colour}"))
        if plan.crop is not None:
            c = plan.crop
            steps.append(("crop", f"w={c.width}:h={c.height}:x={c.left}:y={c.top}:exact=1"))
        if plan.canvas != plan.scaled and plan.crop is None:
            r, g, b = parse_colour(p.background)
            (cw, ch), (ox, oy) = plan.canvas, plan.offset
            steps.append(("pad", f"w={cw}:h={ch}:x={ox}:y={oy}:color=0x{r:02x}{g:02x}{b:02x}"))
        steps.append(("format", "pix_fmts=" + ("rgb24" if p.animated else "yuv420p")))
        steps.append(("setsar", "1"))
        return steps

    def chain(self, graph: av.filter.Graph, upstream: av.filter.context.FilterContext,
              pad: int) -> None:
        """Append this output's filters after `upstream`'s output `pad`; end in a sink."""
        node, out_pad = upstream, pad
        for name, args in self.filters():
            nxt = graph.add(name, args)
            node.link_to(nxt, out_pad, 0)
            node, out_pad = nxt, 0
        self.sink = graph.add("buffersink")
        node.link_to(self.sink, out_pad, 0)

    def take(self) -> None:
        """Encode every frame the branch has ready (a failure ends this output only)."""
        if self.error is not None:
            for _ in _drain(self.sink):
                pass
            return
        start = time.perf_counter()
        try:
            for frame in _drain(self.sink):
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
                self._save_animation()
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

    def _save_animation(self) -> None:
        if not self.frames:
            raise ValueError("no frames in the asked time range")
        h, w = self.frames[0].shape[:2]
        pages = [pyvips.Image.new_from_memory(f.tobytes(), w, h, 3, "uchar") for f in self.frames]
        image = pyvips.Image.arrayjoin(pages, across=1).copy(interpretation="srgb")
        delay = max(20, round(1000 / float(self.rate)))
        image.set_type(pyvips.GValue.gint_type, "page-height", h)
        image.set_type(pyvips.GValue.array_int_type, "delay", [delay] * len(pages))
        image.set_type(pyvips.GValue.gint_type, "loop", 0)
        self.frames = []
        if self.preset.format == "gif":
            image.gifsave(str(self.path), effort=7, bitdepth=8, interframe_maxerror=4, keep="none")
        else:
            image.webpsave(str(self.path), Q=self.preset.quality, effort=4, min_size=True,
                           keep="none")


class _AudioTrack:
    """One distinct audio setting: resampled and encoded once, muxed into each of its outputs."""

    def __init__(self, key: tuple, outputs: list[Branch], channels: int) -> None:
        codec, kbps, rate, start_s, max_duration_s = key
        del start_s  # audio with a start offset is refused by the preset model
        self.outputs = outputs
        self.end = max_duration_s
        layout = "mono" if channels == 1 else "stereo"
        first = outputs[0]
        assert first.container is not None
        stream = first.container.add_stream(AUDIO_ENCODERS[codec], rate=rate, layout=layout)
        stream.codec_context.bit_rate = kbps * 1000
        stream.codec_context.open()
        first.audio_stream = stream
        self.encoder = stream
        for out in outputs[1:]:
            assert out.container is not None
            out.audio_stream = out.container.add_stream_from_template(stream)
        fmt = stream.codec_context.format.name
        self.resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate,
                                           frame_size=stream.codec_context.frame_size or None)
        self.done = False

    def push(self, frame: av.AudioFrame | None) -> None:
        if self.done:
            return
        if frame is not None and self.end is not None and frame.time >= self.end:
            frame, self.done = None, True
        for resampled in self.resampler.resample(frame):
            self._mux(self.encoder.encode(resampled))
        if frame is None:
            self._mux(self.encoder.encode(None))
            self.done = True

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            for out in self.outputs:
                if out.audio_stream is None:
                    continue
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
                copy.time_base = packet.time_base
                copy.is_keyframe = packet.is_keyframe
                copy.stream = out.audio_stream
                out.mux_audio(copy)


@dataclass
class _Stills:
    """Frames kept for posters: at asked times, and the best-scoring of a sample."""

    times: list[float]
    best: bool
    step_s: float
    picked: dict[float | str, av.VideoFrame] = field(default_factory=dict)
    best_score: float = -math.inf
    next_sample: float = 0.0
    last: av.VideoFrame | None = None

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


def _rotation(frame: av.VideoFrame) -> int:
    try:
        return round(frame.rotation / 90) * 90
    except (AttributeError, TypeError, ValueError):
        return 0


class _Pass:
    """State of one decode pass: built on the first frame (size, rotation, pixel format)."""

    def __init__(self, container: av.container.InputContainer, source: Source,
                 presets: dict[str, VideoPreset], frames: list[float | str], workdir: Path) -> None:
        self.container, self.source = container, source
        self.presets, self.workdir = presets, workdir
        self.vstream = container.streams.video[0]
        self.vstream.thread_type = "AUTO"
        self.astream = container.streams.audio[0] if container.streams.audio else None
        self.outputs: list[Branch] = []
        self.tracks: list[_AudioTrack] = []
        self.graph: av.filter.Graph | None = None
        self.src: av.filter.context.FilterContext | None = None
        self.fmt: tuple[int, int, str] | None = None
        self.rotation = 0
        self.origin: int | None = None
        self.last_pts: int | None = None
        self.end_s = 0.0
        self.pending_audio: list[av.AudioFrame] = []
        duration = source.duration_s or 0.0
        self.stills = _Stills(
            times=sorted(f for f in frames if isinstance(f, float)), best="best" in frames,
            step_s=max(0.25, duration / BEST_FRAME_SAMPLES) if duration else 1.0,
        )

    def _build(self, frame: av.VideoFrame) -> None:
        self.rotation = _rotation(frame)
        self.fmt = (frame.width, frame.height, frame.format.name)
        upright = (frame.width, frame.height)
        if self.rotation % 180:
            upright = (frame.height, frame.width)
        tb = self.vstream.time_base or Fraction(1, 90000)
        self.outputs = [Branch(r, p, upright, self.source.fps, tb, self.workdir)
                        for r, p in self.presets.items()]
        for out in self.outputs:
            out.open()
        if self.outputs:
            graph = av.filter.Graph()
            src = graph.add_buffer(width=frame.width, height=frame.height,
                                   format=frame.format.name, time_base=tb)
            node = src
            for name, args in _rotation_filters(self.rotation):
                nxt = graph.add(name, args)
                node.link_to(nxt)
                node = nxt
            split = graph.add("split", str(len(self.outputs)))
            node.link_to(split)
            for i, out in enumerate(self.outputs):
                out.chain(graph, split, i)
            graph.configure()
            self.graph, self.src = graph, src
        by_key: dict[tuple, list[Branch]] = {}
        for out in self.outputs:
            key = out.preset.audio_key()
            if key is not None and self.astream is not None and not out.preset.animated:
                by_key.setdefault(key, []).append(out)
        self.tracks = [_AudioTrack(k, outs, self.source.audio_channels)
                       for k, outs in by_key.items()]
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
        return {out.recipe: out.finish() for out in self.outputs}


def render_video(
    data: bytes | BinaryIO,
    presets: dict[str, VideoPreset],
    frames: list[float | str],
    workdir: Path,
    max_pixels: int = DEFAULT_MAX_VIDEO_PIXELS,
    max_duration_s: float = DEFAULT_MAX_VIDEO_S,
) -> VideoPass:
    """Every video recipe (keyed by recipe hash) and every still of one master, in one pass.

    Raises MasterError when the master itself cannot be read: not a video, no video stream, no
    frames, corrupt or truncated data, over the limits.
    """
    start = time.perf_counter()
    container = open_master(data)
    try:
        source = describe_source(container, max_pixels, max_duration_s)
        state = _Pass(container, source, presets, frames, workdir)
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
