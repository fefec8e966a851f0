"""Savers: per-format options, metadata stripped, and the highest quality under a byte budget."""

from __future__ import annotations

from collections.abc import Callable

import pyvips

from ..errors import MasterError
from ..spec.models import ImagePreset


def _saver(preset: ImagePreset) -> Callable[[pyvips.Image, int], bytes]:
    effort = preset.effective_effort
    if preset.format == "jpeg":
        return lambda img, q: img.jpegsave_buffer(
            Q=q, optimize_coding=True, interlace=preset.progressive, keep="none"
        )
    if preset.format == "webp":
        return lambda img, q: img.webpsave_buffer(Q=q, effort=effort, keep="none")
    if preset.format == "avif":
        return lambda img, q: img.heifsave_buffer(
            Q=q, compression="av1", effort=effort, bitdepth=8, keep="none"
        )
    return lambda img, q: img.pngsave_buffer(compression=effort, keep="none")


# The largest side each format can hold (libwebp 16383, libheif's default limit for AVIF).
MAX_SIDE = {"jpeg": 65500, "webp": 16383, "avif": 16384, "png": 1 << 31}


def encode(image: pyvips.Image, preset: ImagePreset) -> tuple[bytes, int]:
    """Encode once at the preset's quality; under max_bytes, search down for the best fit.

    Returns the bytes and the quality used. The search is a bisection over quality (each step
    one encode of an in-memory image, so about log2(quality - min_quality) extra encodes, and
    only when the first encode is over budget).
    """
    limit = MAX_SIDE[preset.format]
    if max(image.width, image.height) > limit:
        raise MasterError(
            f"the output would be {image.width}x{image.height}, beyond what {preset.format} "
            f"can hold ({limit} pixels a side); the master's aspect is too extreme for this preset"
        )
    save = _saver(preset)
    if preset.format == "jpeg" and image.hasalpha():
        raise MasterError("internal: JPEG output still has alpha")  # render flattens first
    quality = preset.effective_quality
    data = save(image, quality)
    if preset.max_bytes is None or len(data) <= preset.max_bytes:
        return data, quality
    lo, hi = preset.min_quality, quality - 1
    best: tuple[bytes, int] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = save(image, mid)
        if len(candidate) <= preset.max_bytes:
            best, lo = (candidate, mid), mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise MasterError(
            f"cannot fit {preset.max_bytes} bytes: {len(candidate)} bytes even at the minimum "
            f"quality {preset.min_quality}"
        )
    return best
