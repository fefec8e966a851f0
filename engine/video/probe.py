"""What a video master is (before decoding), and what a written video output turned out to be.

Plain facts from PyAV's demuxer: no filter graphs, no encoders.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import pyvips

from .. import formats
from ..errors import MasterError
from ..limits import DEFAULT_MAX_VIDEO_PIXELS, DEFAULT_MAX_VIDEO_S

# Untrusted input limits (ARCHITECTURE.md section 5): a frame larger than 8K UHD, or a master
# longer than four hours, is refused before any decode.


def av_message(exc: Exception) -> str:
    """An FFmpeg error without PyAV's errno prefix and file name noise."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip() or type(exc).__name__


@dataclass(frozen=True)
class Source:
    width: int  # coded frame size
    height: int
    duration_s: float | None  # what the container claims; None when it does not say
    fps: Fraction | None  # average frame rate; None when unknown
    video_codec: str
    has_audio: bool
    audio_channels: int


def open_master(source: bytes | BinaryIO) -> av.container.InputContainer:
    """Open a master from its bytes or from a seekable file object (streamed, not loaded)."""
    try:
        fh = io.BytesIO(source) if isinstance(source, bytes) else source
        return av.open(fh, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError) as exc:
        raise MasterError(f"not a readable video: {av_message(exc)}") from None


def describe_source(
    container: av.container.InputContainer,
    max_pixels: int = DEFAULT_MAX_VIDEO_PIXELS,
    max_duration_s: float = DEFAULT_MAX_VIDEO_S,
) -> Source:
    if not container.streams.video:
        raise MasterError("no video stream (an audio-only or empty file)")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:
        raise MasterError("the video stream has no frame size (a corrupt header)")
    if ctx.width * ctx.height > max_pixels:
        raise MasterError(
            f"frame size {ctx.width}x{ctx.height} is over the limit of {max_pixels} pixels"
        )
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    if duration is not None and duration > max_duration_s:
        raise MasterError(f"duration {duration:.0f} s is over the limit of {max_duration_s:.0f} s")
    fps = stream.average_rate or stream.guessed_rate or None
    audio = container.streams.audio
    return Source(
        width=ctx.width, height=ctx.height, duration_s=duration,
        fps=Fraction(fps) if fps else None, video_codec=ctx.name,
        has_audio=bool(audio), audio_channels=audio[0].codec_context.channels if audio else 0,
    )


@dataclass(frozen=True)
class VideoFacts:
    """A written video output, read back from the file: what the manifest records."""

    format: str
    width: int
    height: int
    duration_s: float
    video_codec: str | None
    audio_codec: str | None
    bitrate: int | None  # video bits per second, from the stream's packet sizes
    fps: float | None
    frames: int


# The codec name fanout records for each name FFmpeg reads a codec back as (libdav1d: av1).
CODEC_NAMES = {name: c.name for c in formats.CODECS.values() if c.kind == "video"
               for name in (c.name, *c.decoders)}


def describe_output(path: Path, fmt: str) -> VideoFacts:
    """Size, duration, codecs and the measured bitrate of a written file."""
    if fmt in formats.ANIMATED:
        image = pyvips.Image.new_from_file(str(path), n=-1)
        pages = image.get("n-pages") if image.get_typeof("n-pages") else 1
        height = image.get("page-height") if image.get_typeof("page-height") else image.height
        delays = image.get("delay") if image.get_typeof("delay") else [0] * pages
        duration = sum(delays) / 1000
        return VideoFacts(fmt, image.width, height, duration, None, None, None,
                          pages / duration if duration else None, pages)
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        size, frames, end = 0, 0, 0.0
        for packet in container.demux(video):
            if packet.size == 0 or packet.pts is None:
                continue
            size += packet.size
            frames += 1
            stop = packet.pts + (packet.duration or 0)
            end = max(end, float(stop * packet.time_base))
        start = float((video.start_time or 0) * video.time_base)
        duration = max(0.0, end - start)
        # What a player shows: the container's duration, the longest of its streams (audio
        # may outlast the picture); bitrate and fps stay the video stream's own.
        shown = container.duration / av.time_base if container.duration else duration
        return VideoFacts(
            format=fmt, width=video.codec_context.width, height=video.codec_context.height,
            duration_s=max(duration, shown), video_codec=CODEC_NAMES.get(video.codec_context.name,
                                                             video.codec_context.name),
            audio_codec=audio.codec_context.name if audio is not None else None,
            bitrate=round(size * 8 / duration) if duration else None,
            fps=frames / duration if duration else None, frames=frames,
        )
