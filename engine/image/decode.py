"""Decode a master once: safety checks, shrink-on-load, colour to sRGB, orient, into memory.

Order: sniff the loader (only formats fuzzed for untrusted input) -> read the header and check
the pixel limit -> reload with shrink-on-load at the largest size any derivative needs ->
sRGB -> copy into memory (truncated or corrupt data fails here, not as a grey half) -> orient.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

from .. import formats
from ..errors import MasterError
from ..geometry import jpeg_shrink
from ..limits import DEFAULT_MAX_PIXELS
from . import ops


def master_format(loader: str) -> formats.Format | None:
    """The master format a libvips loader reads, or None when fanout refuses it: only the
    loaders of formats.py's master formats are accepted. Everything else (SVG, PDF, matrix,
    FITS, raw...) is refused, on top of libvips' own block on loaders not meant for untrusted
    data (set in configure())."""
    fmt = formats.by_loader(loader)
    return fmt if fmt is not None and fmt.master and fmt.kind == "image" else None


_configured = False


def configure(concurrency: int | None = None) -> None:
    """Process-wide libvips settings for a batch: safety, no operation cache, thread count."""
    global _configured
    if not _configured:
        pyvips.block_untrusted_set(True)
        pyvips.cache_set_max(0)  # a batch never revisits an operation; the cache only holds memory
        _configured = True
    if concurrency is not None:
        pyvips.concurrency_set(max(1, concurrency))


@dataclass
class Decoded:
    """A master in memory: upright, 8-bit sRGB (alpha kept), at `scale` of its oriented size."""

    image: pyvips.Image
    width: int  # oriented size of the master itself (before shrink-on-load)
    height: int
    scale: float


@dataclass(frozen=True)
class Header:
    loader: str
    width: int  # oriented
    height: int


def _oriented(image: pyvips.Image) -> tuple[int, int]:
    orientation = image.get("orientation") if image.get_typeof("orientation") else 1
    if orientation in (5, 6, 7, 8):
        return image.height, image.width
    return image.width, image.height


def probe(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Read the header only: which loader, how big once upright. Raises MasterError if refused."""
    if not data:
        raise MasterError("empty file (0 bytes)")
    try:
        image = pyvips.Image.new_from_buffer(data, "", access="sequential")
    except pyvips.Error as exc:
        raise MasterError(f"not a supported image: {vips_message(exc)}") from None
    loader = image.get("vips-loader")
    if master_format(loader) is None:
        raise MasterError(
            f"image format not supported ({loader.removesuffix('_buffer').removesuffix('load')})"
        )
    if loader == "heifload_buffer" and image.get_typeof("heif-compression"):
        compression = image.get("heif-compression")
        if compression != "av1":  # this libvips build decodes AVIF only: no HEVC, no JPEG-in-HEIF
            raise MasterError(f"image format not supported (HEIF with {compression} compression)")
    width, height = _oriented(image)
    if width * height > max_pixels:
        raise MasterError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    return Header(loader=loader, width=width, height=height)


def decode(data: bytes, header: Header, scale: float) -> Decoded:
    """Load at (at least) `scale` of the master's size and bring it into memory, upright and sRGB."""
    options: dict[str, object] = {"access": "sequential", "fail_on": "truncated"}
    if header.loader == "jpegload_buffer":
        options["shrink"] = jpeg_shrink(scale)
    elif header.loader == "webpload_buffer" and scale < 1.0:
        options["scale"] = scale
    try:
        image = pyvips.Image.new_from_buffer(data, "", **options)
        # Colour first: it streams, so the sequential read stays in order. Rotating needs random
        # access, which the in-memory copy gives for free.
        image = ops.to_srgb(image).copy_memory()
        if image.get_typeof("orientation") and image.get("orientation") != 1:
            image = ops.autorotate(image).copy_memory()
    except pyvips.Error as exc:
        raise MasterError(f"cannot decode image: {vips_message(exc)}") from None
    return Decoded(image=image, width=header.width, height=header.height,
                   scale=image.width / header.width)


def vips_message(exc: pyvips.Error) -> str:
    detail = (exc.detail or "").strip().splitlines()
    lines = [line.strip() for line in detail if line.strip()]
    return "; ".join(dict.fromkeys(lines)) or exc.message
