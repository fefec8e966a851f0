"""A channel's rules, checked on an output: at render time and by `fanout check`.

Size, format and byte rules need only the file's facts; colour, background and fill rules look
at the decoded pixels of the file as written (so JPEG artefacts at a border count).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyvips

from .image import ops
from .spec.models import Rules, parse_colour
from .video.probe import VideoFacts

# How far from the background colour a pixel must be to count as product (fill rule).
CONTENT_THRESHOLD = 16


def needs_pixels(rules: Rules) -> bool:
    return rules.background is not None or rules.min_fill is not None


def _content_mask(image: pyvips.Image, colour: list[int]) -> pyvips.Image | None:
    """255 where a pixel differs from `colour` by more than CONTENT_THRESHOLD in some band
    (uchar comparisons only: no float copy of the image); None where no 8-bit value can."""
    lo = [c - CONTENT_THRESHOLD for c in colour]
    hi = [c + CONTENT_THRESHOLD for c in colour]
    tests = ([image < lo] if max(lo) > 0 else []) + ([image > hi] if min(hi) < 255 else [])
    if not tests:
        return None
    return (tests[0] | tests[1] if len(tests) == 2 else tests[0]).bandor()


def pixel_violations(rules: Rules, image: pyvips.Image) -> list[str]:
    """Background (the outermost rows and columns are exactly the colour) and fill rules (the
    box of pixels off the background by more than CONTENT_THRESHOLD spans min_fill of the
    frame), on an 8-bit image held in memory."""
    if image.interpretation != "srgb" or image.bands not in (3, 4):
        return [f"colour: expected sRGB, found {image.interpretation} with {image.bands} bands"]
    found = []
    colour = list(parse_colour(rules.background or "#ffffff"))
    if rules.background is not None:
        w, h = image.width, image.height
        edges = [image.crop(*box)[:3].numpy().reshape(-1, 3)
                 for box in ((0, 0, w, 1), (0, h - 1, w, 1), (0, 0, 1, h), (w - 1, 0, 1, h))]
        worst = int(np.abs(np.concatenate(edges).astype(np.int16) - colour).max())
        if worst > 0:
            found.append(f"background: expected a {rules.background} border, found pixels "
                         f"off by up to {worst}")
    if rules.min_fill is not None:
        solid = image.flatten(background=colour) if image.hasalpha() else image
        mask = _content_mask(solid, colour)
        box = None if mask is None else ops.mask_box(mask)
        fill = (0 if box is None else max(box.width, box.height)) / max(image.width, image.height)
        if fill < rules.min_fill:
            found.append(f"min_fill: expected the product to span at least {rules.min_fill:.0%} "
                         f"of the frame, found {fill:.1%}")
    return found


def violations(
    rules: Rules,
    fmt: str,
    width: int,
    height: int,
    size: int,
    pixels: Callable[[], pyvips.Image] | None,
) -> list[str]:
    """Every rule of `rules` the output breaks, as 'rule: expected ..., found ...' lines.

    `pixels` is None for a video output: background, fill and colour rules are image rules.
    """
    found = []
    long_side = max(width, height)
    if rules.formats is not None and fmt not in rules.formats:
        found.append(f"formats: expected one of {', '.join(rules.formats)}, found {fmt}")
    if rules.min_long_side is not None and long_side < rules.min_long_side:
        found.append(f"min_long_side: expected >= {rules.min_long_side}, found {long_side}")
    if rules.max_long_side is not None and long_side > rules.max_long_side:
        found.append(f"max_long_side: expected <= {rules.max_long_side}, found {long_side}")
    if rules.min_width is not None and width < rules.min_width:
        found.append(f"min_width: expected >= {rules.min_width}, found {width}")
    if rules.max_width is not None and width > rules.max_width:
        found.append(f"max_width: expected <= {rules.max_width}, found {width}")
    aspect = width / height
    # 1% slack: 1080x566 is Instagram's 1.91:1 though 1080/566 = 1.908
    if rules.min_aspect is not None and aspect < rules.min_aspect * 0.99:
        found.append(f"min_aspect: expected >= {rules.min_aspect}, found {aspect:.3f}")
    if rules.max_aspect is not None and aspect > rules.max_aspect * 1.01:
        found.append(f"max_aspect: expected <= {rules.max_aspect}, found {aspect:.3f}")
    if rules.max_bytes is not None and size > rules.max_bytes:
        found.append(f"max_bytes: expected <= {rules.max_bytes}, found {size}")
    if pixels is not None and needs_pixels(rules):
        found += pixel_violations(rules, pixels())
    return found


def video_violations(rules: Rules, facts: VideoFacts) -> list[str]:
    """The video rules (codecs, bitrate, duration, frame rate) a written video breaks."""
    found = []
    if rules.codecs is not None and facts.video_codec is not None and (
        facts.video_codec not in rules.codecs
    ):
        found.append(f"codecs: expected one of {', '.join(rules.codecs)}, "
                     f"found {facts.video_codec}")
    if rules.max_bitrate_kbps is not None and facts.bitrate is not None and (
        facts.bitrate > rules.max_bitrate_kbps * 1000
    ):
        found.append(f"max_bitrate_kbps: expected <= {rules.max_bitrate_kbps}, "
                     f"found {facts.bitrate / 1000:.0f}")
    if rules.max_duration_s is not None and facts.duration_s > rules.max_duration_s + 0.05:
        found.append(f"max_duration_s: expected <= {rules.max_duration_s}, "
                     f"found {facts.duration_s:.2f}")
    if rules.max_fps is not None and facts.fps is not None and facts.fps > rules.max_fps * 1.01:
        found.append(f"max_fps: expected <= {rules.max_fps}, found {facts.fps:.2f}")
    return found
