"""Geometry as plain arithmetic: sizes, crops, shrink factors. No pixels, no pyvips.

Everything here is computed before (or without) decoding, so it is testable alone and shared by
every derivative of a master.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .spec.models import Resize

# When a smaller size is made from an already-resized intermediate, the intermediate must hold
# at least this many source pixels per output pixel; below it, resize from the working image.
# tests/test_pyramid.py shows results made this way match a direct resize.
PYRAMID_MIN_RATIO = 2.0


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class Layout:
    """How one derivative is made from a source region of size (src_w, src_h).

    Scale the region to `scaled`, then take `crop` out of it (None: keep all, "attention": smart
    crop to `canvas`), then place it at `offset` on a `canvas`-sized background.
    """

    scaled: tuple[int, int]
    crop: Box | None
    smart_crop: bool
    canvas: tuple[int, int]
    offset: tuple[int, int]


def _at_least_one(value: float) -> int:
    return max(1, int(round(value)))


def fit_inside(src_w: int, src_h: int, width: int | None, height: int | None) -> tuple[int, int]:
    """The largest size with the source's aspect inside width x height (either may be None).

    The binding side is exact; the other is rounded and never exceeds its bound.
    """
    if width is not None and (height is None or width / src_w <= height / src_h):
        h = _at_least_one(src_h * width / src_w)
        return width, min(h, height) if height is not None else h
    assert height is not None
    w = _at_least_one(src_w * height / src_h)
    return (min(w, width) if width is not None else w), height


def gravity_offset(gravity: str, w: int, h: int, tw: int, th: int) -> tuple[int, int]:
    """Top-left of a tw x th window inside w x h, placed by gravity."""
    dx, dy = w - tw, h - th
    x = {"west": 0, "east": dx}.get(gravity.split("-")[-1], dx // 2)
    y = {"north": 0, "south": dy}.get(gravity.split("-")[0], dy // 2)
    return x, y


def layout(src_w: int, src_h: int, resize: Resize) -> Layout:
    """Plan one derivative from a source region; the single place each fit mode is defined."""
    W, H = resize.width, resize.height
    if resize.fit == "fill":
        assert W is not None and H is not None
        scale = max(W / src_w, H / src_h)
        scaled = (max(W, math.ceil(src_w * scale - 1e-9)), max(H, math.ceil(src_h * scale - 1e-9)))
        smart = resize.gravity == "attention"
        crop = None
        if not smart and scaled != (W, H):
            x, y = gravity_offset(resize.gravity, scaled[0], scaled[1], W, H)
            crop = Box(x, y, W, H)
        return Layout(scaled, crop, smart and scaled != (W, H), (W, H), (0, 0))
    if resize.fit == "pad":
        assert W is not None and H is not None
        ratio = resize.fill_ratio or 1.0
        inner = fit_inside(src_w, src_h, _at_least_one(W * ratio), _at_least_one(H * ratio))
        offset = ((W - inner[0]) // 2, (H - inner[1]) // 2)
        return Layout(inner, None, False, (W, H), offset)
    if resize.fit == "limit":
        box_w = min(W, src_w) if W is not None else None
        box_h = min(H, src_h) if H is not None else None
        size = fit_inside(src_w, src_h, box_w, box_h)
        return Layout(size, None, False, size, (0, 0))
    size = fit_inside(src_w, src_h, W, H)  # fit
    return Layout(size, None, False, size, (0, 0))


def _even(value: int) -> int:
    return max(2, value - value % 2)


def video_layout(src_w: int, src_h: int, resize: Resize) -> Layout:
    """`layout` for 4:2:0 video: every size and offset even (an odd side is rounded down)."""
    plan = layout(src_w, src_h, resize)
    if resize.fit in ("fit", "limit"):
        size = (_even(plan.scaled[0]), _even(plan.scaled[1]))
        return Layout(size, None, False, size, (0, 0))
    if resize.fit == "pad":
        inner = (_even(plan.scaled[0]), _even(plan.scaled[1]))
        cw, ch = plan.canvas
        offset = ((cw - inner[0]) // 4 * 2, (ch - inner[1]) // 4 * 2)
        return Layout(inner, None, False, plan.canvas, offset)
    crop = plan.crop
    if crop is not None:
        crop = Box(crop.left - crop.left % 2, crop.top - crop.top % 2, crop.width, crop.height)
    return Layout(plan.scaled, crop, False, plan.canvas, (0, 0))


def needed_scale(src_w: int, src_h: int, resize: Resize, trims: bool) -> float:
    """The scale of the whole master a derivative needs, so decode can shrink on load.

    A trimmed derivative needs full resolution: the product's box is unknown until the pixels
    are seen, and it may be much smaller than the frame.
    """
    if trims:
        return 1.0
    plan = layout(src_w, src_h, resize)
    return min(1.0, max(plan.scaled[0] / src_w, plan.scaled[1] / src_h))


def jpeg_shrink(scale: float) -> int:
    """The largest JPEG shrink-on-load factor (1, 2, 4, 8) that still leaves `scale` reachable."""
    shrink = 1
    while shrink < 8 and scale * shrink * 2 <= 1.0:
        shrink *= 2
    return shrink


# -- Editors' framing: focal points and crop boxes (catalog focus_x/focus_y, <listing>.crops.toml)


@dataclass(frozen=True)
class Framing:
    """What an editor decided for one fill derivative of a master, in the oriented master:
    a focal point (fractions 0..1) and/or a crop box (pixels) with the key that chose it."""

    focus: tuple[float, float] | None = None
    box: tuple[int, int, int, int] | None = None  # x, y, w, h
    key: str | None = None  # the box's entry: "16:9" or "channel/output"

    def describe(self) -> str:
        """Text that decides the bytes: mixed into the derivative's recipe hash."""
        parts = []
        if self.focus is not None:
            parts.append(f"focus={self.focus[0]:.6f},{self.focus[1]:.6f}")
        if self.box is not None:
            parts.append("box=" + ",".join(str(v) for v in self.box))
        return ";".join(parts)


def aspect_key(key: str) -> float | None:
    """The ratio of an aspect key ("16:9", "1.91:1"), or None when `key` is not one."""
    parts = key.split(":")
    if len(parts) != 2:
        return None
    try:
        w, h = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return w / h if w > 0 and h > 0 and math.isfinite(w / h) else None


def aspect_matches(ratio: float, width: int, height: int, tolerance: float = 0.01) -> bool:
    """Whether an output of width x height has the aspect `ratio`, within `tolerance`."""
    return abs(ratio / (width / height) - 1.0) <= tolerance


def focus_offset(sw: int, sh: int, cw: int, ch: int, fx: float, fy: float) -> tuple[float, float]:
    """Top-left of a cw x ch window inside sw x sh that puts the point (fx, fy) (in sw x sh
    pixels) as near the window's centre as the frame allows."""
    x = min(max(fx - cw / 2, 0.0), max(0, sw - cw))
    y = min(max(fy - ch / 2, 0.0), max(0, sh - ch))
    return x, y


def box_problem(box: tuple[int, int, int, int], width: int, height: int) -> str | None:
    """Why an editor's crop box cannot be used on a width x height image, or None."""
    x, y, w, h = box
    if w < 1 or h < 1:
        return f"is smaller than 1 px in the {width}x{height} image"
    if x < 0 or y < 0 or x + w > width or y + h > height:
        return f"is outside the {width}x{height} image"
    return None


def box_to_aspect(box: tuple[int, int, int, int], width: int, height: int) -> Box:
    """The box narrowed around its centre to the aspect width:height exactly (boxes match an
    output's aspect within 1%, so this trims at most a percent of one side)."""
    x, y, w, h = box
    if w * height > h * width:  # too wide
        nw = max(1, min(w, round(h * width / height)))
        return Box(x + (w - nw) // 2, y, nw, h)
    nh = max(1, min(h, round(w * height / width)))
    return Box(x, y + (h - nh) // 2, w, nh)

