"""Savers: per-format options, metadata stripped, and the highest quality under a byte budget."""

from __future__ import annotations

from collections.abc import Callable

import pyvips

from .. import formats
from ..errors import MasterError
from ..spec.models import ImagePreset


# libvips options per output format (the saver itself is named in formats.py), for an encode at
# quality q; metadata is never kept.
def _jpeg(p: ImagePreset, q: int) -> dict[str, object]:
    return {"Q": q, "optimize_coding": True, "interlace": p.progressive, "keep": "none"}


def _webp(p: ImagePreset, q: int) -> dict[str, object]:
    return {"Q": q, "effort": p.effective_effort, "keep": "none"}


def _avif(p: ImagePreset, q: int) -> dict[str, object]:
    return {"Q": q, "compression": "av1", "effort": p.effective_effort, "bitdepth": 8,
            "keep": "none"}


def _png(p: ImagePreset, q: int) -> dict[str, object]:
    return {"compression": p.effective_effort, "keep": "none"}


SAVE_OPTIONS: dict[str, Callable[[ImagePreset, int], dict[str, object]]] = {
    "jpeg": _jpeg, "webp": _webp, "avif": _avif, "png": _png,
}


def describe(preset: ImagePreset, quality: int) -> str:
    """The saver and the options that decided the bytes, as text for the manifest, e.g.
    "jpegsave Q=85 optimize_coding=1 interlace=1" (metadata is always stripped: not listed)."""
    options = SAVE_OPTIONS[preset.format](preset, quality)
    shown = [f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in options.items()
             if k != "keep"]
    return " ".join([formats.output(preset.format).saver or preset.format, *shown])


def _saver(preset: ImagePreset) -> Callable[[pyvips.Image, int], bytes]:
    operation = f"{formats.output(preset.format).saver}_buffer"
    options = SAVE_OPTIONS[preset.format]
    return lambda img, q: getattr(img, operation)(**options(preset, q))


def encode(image: pyvips.Image, preset: ImagePreset) -> tuple[bytes, int]:
    """Encode once at the preset's quality; under max_bytes, search down for the best fit.

    Returns the bytes and the quality used. The search is a bisection over quality (each step
    one encode of an in-memory image, so about log2(quality - min_quality) extra encodes, and
    only when the first encode is over budget).
    """
    fmt = formats.output(preset.format)
    if max(image.width, image.height) > (fmt.max_side or 0):
        raise MasterError(
            f"the output would be {image.width}x{image.height}, beyond what {fmt.name} "
            f"can hold ({fmt.max_side} pixels a side); the master's aspect is too extreme for "
            "this preset"
        )
    save = _saver(preset)
    if not fmt.alpha and image.hasalpha():  # render flattens first
        raise MasterError(f"internal: {fmt.name} output still has alpha")
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
