"""How each video output is encoded and written: encoder and its options, container, muxer.

A preset picks the codec (x264, x265, libvpx-vp9, SVT-AV1 for video; AAC or Opus for audio)
and the container (MP4 with the index first, or WebM); animated previews (GIF, animated WebP)
are saved by libvips from the collected frames. `encoder_settings()` is the whole rate control,
GOP and speed recipe, so a benchmark can hand the same options to the ffmpeg command line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyvips

from .. import formats
from ..spec.models import VideoPreset

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise
# FFmpeg's log lines are dropped in C (PyAV's no-op callback). A level would install PyAV's
# Python callback, which takes the GIL for every error line: an x264 thread logging while an
# unflushed encoder is freed (a master that failed mid-pass) then waits for the GIL held by the
# thread that joins it, and the run hangs (seen in the truncated-video test, stacks via gdb).
# Errors still raise, with FFmpeg's error string.
av.logging.set_level(None)

# Part of every video recipe's identity: the FFmpeg build decides output bytes.
VIDEO_ENGINE_ID = (
    f"fanout-video-1/avcodec-{'.'.join(map(str, av.library_versions['libavcodec']))}"
)


def encoder_codec(p: VideoPreset) -> str:
    """The video codec of a container output (an animated one has none)."""
    codec = p.effective_codec
    assert codec is not None, f"{p.format} is animated: libvips saves it, no encoder"
    return codec


def encoder_settings(p: VideoPreset, rate: Fraction) -> tuple[str, dict[str, str]]:
    """(FFmpeg encoder, its options) for a preset: rate control, GOP, speed."""
    codec = encoder_codec(p)
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
    return formats.CODECS[codec].encoder, opts


def muxer_options(fmt: str) -> dict[str, str]:
    """Container options (formats.py: an MP4 gets its index at the front)."""
    return dict(formats.output(fmt).muxer_options)


def open_video_output(
    path: Path, p: VideoPreset, rate: Fraction, canvas: tuple[int, int], tb: Fraction
) -> tuple[av.container.OutputContainer, av.VideoStream]:
    """The output file and its video encoder: yuv420p, BT.709 limited range, frame threads."""
    container = av.open(str(path), "w", format=formats.output(p.format).muxer,
                        container_options=muxer_options(p.format))
    encoder, opts = encoder_settings(p, rate)
    stream = container.add_stream(encoder, rate=rate)
    ctx = stream.codec_context
    ctx.width, ctx.height = canvas
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = tb
    ctx.thread_type = "AUTO"
    ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 1, 1, 1, 1  # BT.709
    codec = formats.CODECS[encoder_codec(p)]
    if codec.tag is not None:
        ctx.codec_tag = codec.tag
    stream.options = opts
    return container, stream


def add_audio_stream(container: av.container.OutputContainer, codec: str, kbps: int,
                     rate: int, layout: str) -> av.AudioStream:
    """An opened audio encoder in `container` (AAC or Opus at `kbps`)."""
    stream = container.add_stream(formats.CODECS[codec].encoder, rate=rate, layout=layout)
    stream.codec_context.bit_rate = kbps * 1000
    stream.codec_context.open()
    return stream


# libvips options per animated format (the saver itself is named in formats.py).
ANIMATION_OPTIONS: dict[str, Callable[[VideoPreset], dict[str, object]]] = {
    "gif": lambda p: {"effort": 7, "bitdepth": 8, "interframe_maxerror": 4, "keep": "none"},
    "webp": lambda p: {"Q": p.quality, "effort": 4, "min_size": True, "keep": "none"},
}


def save_animation(frames: list[np.ndarray], path: Path, p: VideoPreset, rate: Fraction) -> None:
    """Write collected RGB frames as an endlessly looping GIF or animated WebP.

    Empties `frames` once the pages are built, so the arrays are freed before the save.
    """
    if not frames:
        raise ValueError("no frames in the asked time range")
    h, w = frames[0].shape[:2]
    pages = [pyvips.Image.new_from_memory(f.tobytes(), w, h, 3, "uchar") for f in frames]
    image = pyvips.Image.arrayjoin(pages, across=1).copy(interpretation="srgb")
    delay = max(20, round(1000 / float(rate)))
    image.set_type(pyvips.GValue.gint_type, "page-height", h)
    image.set_type(pyvips.GValue.array_int_type, "delay", [delay] * len(pages))
    image.set_type(pyvips.GValue.gint_type, "loop", 0)
    frames.clear()
    saver = formats.output(p.format).saver
    assert saver is not None  # every animated format has one (tests/test_formats.py)
    getattr(image, saver)(str(path), **ANIMATION_OPTIONS[p.format](p))
