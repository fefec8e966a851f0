"""How much memory one master's task will take at its peak, from its header alone.

The scheduler never runs more masters at once than fit a worker's memory (schedule.py); this
module says how much each one needs. It reads headers only (an image's size and bands, a
video's frame size: a few KB even for a 5 GB clip) and no pixels, so the estimate costs
next to nothing beside the render it sizes.

The models and their constants are measured (peak RSS a fresh process adds while rendering one
master through every built-in channel, 2-core x86_64, libvips 8.18, FFmpeg 8.1):

- an image: it is read whole (its file size), decoded once at the largest size any of its
  derivatives needs (shrink-on-load); the bases and pyramids made from that copy add most of
  it again; and the largest output's encode adds its own buffers (libaom's AVIF encoder the
  most: about 40 bytes per output pixel, against 16 for JPEG, WebP and PNG; a quality =
  "auto" search adds its scoring, about 120 bytes per pixel of the output it scores, which is
  at most 1.2 MP). Derivatives are made one after another, so only the largest encode counts;
- a video: every encoder holds a look-ahead of frames at its own output size (x264 at preset
  `fast`: 30 frames, plus B-frames, references and its threads' frames in flight), and its
  own state; the stills go through the image pipeline at the master's frame size.

The estimates (with MARGIN) against those measurements: images +17% .. +34% (a 6000x4000
PNG through every channel, a 3000x2000 one through web, a 6000x4000 JPEG through email, with
the auto-quality presets), a 3 s 960x540 clip +3% (amazon: one 1080p encoder), +14% (every
channel), +100% (email + mobile: small encoders, which the per-pixel cost of the 1080p ones
overstates; a 2 s clip peaks lower still). Too high only costs concurrency; too low can cost
a worker, hence the margin. Re-measure when the encoders or the presets change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import BinaryIO

import pyvips

from .errors import MasterError
from .geometry import Framing, jpeg_shrink, layout
from .image.pipeline import needed_scale
from .masters import check_master, open_master
from .spec.models import ImagePreset, Preset, VideoPreset
from .video.branch import plan_for
from .video.probe import describe_source
from .video.probe import open_master as open_video

MB = 2**20
# Image: peak = IMAGE_BASE + file size + DECODED_FACTOR x the decoded copy (8-bit sRGB)
# + the largest of (bytes per output pixel of its format x its canvas). Fitted on a 6000x4000
# and a 2000x2000 JPEG, a 3000x2000 and a 6000x4000 PNG, through every image channel, email
# (two JPEGs up to 1200 px), web (AVIF, WebP, JPEG up to 2560 px), amazon + instagram.
IMAGE_BASE = 26 * MB
DECODED_FACTOR = 1.8
OUTPUT_BYTES_PER_PIXEL = {"avif": 40}
OTHER_OUTPUT_BYTES_PER_PIXEL = 16
# quality = "auto" scores its candidates (SSIMULACRA2: float planes at six scales, blurs):
# whole outputs up to encode.SCORE_MAX_PIXELS, a fixed-size proxy beyond. Measured: email's
# two auto JPEGs (1200x800 the larger) added 97 MB to a 6000x4000 JPEG's peak; web's auto
# outputs 140 MB to a 3000x2000 PNG's.
AUTO_BYTES_PER_PIXEL = 120
AUTO_SCORED_PIXELS = 1_200_000
# Video: peak = VIDEO_BASE + per encoder (ENCODER_BASE + ENCODER_BYTES_PER_PIXEL x its output
# frame) + the stills' image footprint at the master's frame size. Fitted on a 960x540 clip
# through every channel (7 H.264 encoders, 5 of them at 1080-1920 px, and a GIF: 1.18 GB added).
VIDEO_BASE = 40 * MB
ENCODER_BASE = 8 * MB
ENCODER_BYTES_PER_PIXEL = 148
# The spread of the models: estimates are raised by this much, since too low costs a worker.
MARGIN = 1.2
# When a header cannot be read, the task will fail fast on it anyway: a small placeholder.
UNREADABLE = IMAGE_BASE


def estimate(path: str, kind: str | None, presets: Iterable[Preset],
             framings: Iterable[Framing | None] | None = None,
             known: tuple[int, int] | None = None) -> int:
    """Peak bytes the task of this master is expected to add to its worker's memory.

    `presets`: the distinct recipes the master renders (a ladder's rungs each one), with their
    editor framings (for images, the crop box that decides the shrink-on-load). `known`: the
    master's oriented size as the last run recorded it (source_width/height): then nothing is
    read at all, which keeps a night of unchanged masters from touching a million files (the
    loader is told by the extension, the file's own bytes left out: MARGIN covers them)."""
    presets = list(presets)
    framings = list(framings) if framings is not None else [None] * len(presets)
    try:
        if kind == "video":
            width, height = known or _video_size(path)
            return int(MARGIN * video_bytes(width, height, presets))
        images = [(p, f) for p, f in zip(presets, framings, strict=True)
                  if isinstance(p, ImagePreset)]
        if known is not None:
            loader = {"jpg": "jpegload", "jpeg": "jpegload", "webp": "webpload"}.get(
                path.rsplit(".", 1)[-1].lower(), "")
            return int(MARGIN * image_bytes(*known, 3, 0, [p for p, _ in images],
                                            [f for _, f in images], loader))
        return int(MARGIN * _image(path, images))
    except (MasterError, pyvips.Error, OSError, ValueError):
        return UNREADABLE


def image_bytes(width: int, height: int, bands: int, size: int,
                presets: list[ImagePreset], framings: list[Framing | None],
                loader: str = "") -> int:
    """The image model on a header's facts (oriented width and height), without the margin."""
    scale = max((needed_scale(width, height, p, f)
                 for p, f in zip(presets, framings, strict=True)), default=1.0)
    if loader.startswith("jpegload"):
        shrink = jpeg_shrink(scale)
        pixels = math.ceil(width / shrink) * math.ceil(height / shrink)
    elif loader.startswith("webpload") and scale < 1.0:
        pixels = math.ceil(width * scale) * math.ceil(height * scale)
    else:  # PNG, GIF, TIFF, AVIF: decoded at full size
        pixels = width * height
    encode = max((_output_bytes(width, height, p) for p in presets), default=0)
    return int(IMAGE_BASE + size + DECODED_FACTOR * pixels * max(3, bands) + encode)


def _output_bytes(width: int, height: int, preset: ImagePreset) -> int:
    w, h = layout(width, height, preset.resize).canvas
    scoring = AUTO_BYTES_PER_PIXEL * min(w * h, AUTO_SCORED_PIXELS) if preset.auto else 0
    return OUTPUT_BYTES_PER_PIXEL.get(preset.format, OTHER_OUTPUT_BYTES_PER_PIXEL) * w * h + (
        scoring)


def video_bytes(width: int, height: int, presets: list[Preset]) -> int:
    """The video model, without the margin: each distinct video recipe that applies to the
    master is one encoder at its output size (a ladder's rungs above the master make none)."""
    total = VIDEO_BASE
    stills = [p for p in presets if isinstance(p, ImagePreset)]
    for p in presets:
        if isinstance(p, VideoPreset):
            plan, problem = plan_for(p, (width, height))
            if problem is None:
                w, h = plan.canvas
                total += ENCODER_BASE + ENCODER_BYTES_PER_PIXEL * w * h
    if stills:
        total += image_bytes(width, height, 3, 0, stills, [None] * len(stills)) - IMAGE_BASE
    return total


def _image(path: str, images: list[tuple[ImagePreset, Framing | None]]) -> int:
    size = check_master(path) or 0
    with open_master(path) as fh:
        header = pyvips.Image.new_from_source(_source(fh), "", access="sequential")
        width, height = header.width, header.height
        if header.get_typeof("orientation") and header.get("orientation") in (5, 6, 7, 8):
            width, height = height, width
        return image_bytes(width, height, header.bands, size, [p for p, _ in images],
                           [f for _, f in images], header.get("vips-loader"))


def _video_size(path: str) -> tuple[int, int]:
    with open_master(path) as fh, open_video(fh) as container:
        source = describe_source(container, max_pixels=2**62, max_duration_s=math.inf)
    return source.width, source.height


def _source(fh: BinaryIO) -> pyvips.Source:
    """A libvips source over a file object: the loader reads the header and stops there (an
    object store's file is fetched in blocks, not whole)."""
    source = pyvips.SourceCustom()
    source.on_read(lambda size: fh.read(size))
    source.on_seek(lambda offset, whence: fh.seek(offset, whence))
    return source
