"""Decode a master once: safety checks, shrink-on-load, colour to sRGB, orient, into memory.

Order: sniff the loader (only formats fuzzed for untrusted input) -> read the header and check
the pixel limit -> reload with shrink-on-load at the largest size any derivative needs ->
sRGB -> copy into memory (truncated or corrupt data fails here, not as a grey half) -> orient.

Three kinds of master take another road to the same result (see each module):
- HEIC/HEIF with HEVC (phones): heif.py, through pi-heif's libheif and libde265 (this libvips
  decodes AV1 only); header first, then the primary image, upright by libheif.
- SVG: svg.py, rasterised by resvg after safety checks, at the size the outputs need. A vector
  master's `Decoded` size is the raster's own: every derivative is then made by shrinking (or
  keeping) that raster, so no step sees an upscale from the vector.
- Ultra HDR (gain map) JPEGs: libvips would sniff them as uhdrload, but every JPEG (by fanout's
  own sniff) is read with jpegload: the SDR image they carry is an ordinary JPEG
  (shrink-on-load, orientation, ICC as every JPEG); the gain map is ignored.
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass

import pyvips

from .. import formats
from ..errors import MasterError
from ..geometry import jpeg_shrink
from ..limits import DEFAULT_MAX_PIXELS
from . import heif, ops, svg

# fanout's own names for the masters libvips does not read (Header.loader)
HEIF = "heif"
SVG = "svg"
JPEG = "jpegload_source"


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
        _raise_malloc_thresholds()
        _configured = True
    if concurrency is not None:
        pyvips.concurrency_set(max(1, concurrency))


# One block of this size, allocated and freed, raises glibc's mmap threshold to it and its trim
# threshold to twice it (see below).
MALLOC_WARM_BYTES = 8 << 20


def _raise_malloc_thresholds() -> None:
    """Start glibc's malloc where a catalog's first masters would take it.

    glibc serves blocks over its mmap threshold (128 KiB at start) with mmap, and gives an
    arena's free top back to the kernel once it passes the trim threshold (256 KiB); the first
    time a freed mmapped block is bigger, it raises both, to that size and twice it (mallopt(3),
    M_MMAP_THRESHOLD). Until then, two threads each rendering one streamed derivative (sharp's
    benchmark task: decode, resize and encode a JPEG, ~2 MB of libjpeg buffers an operation)
    hand that memory back after every operation and fault it in again: 420-650 minor faults
    and 1.4-2 ms of system time an operation, 3% of its time (this VM, 2 threads; sharp in
    node: 54-90). One 8 MiB block freed here sets 8 MiB / 16 MiB: 34 faults an operation.
    mallopt() itself is not used: setting a threshold turns glibc's own adjustment off, and a
    fixed one measured worse on the catalog job (a 4 MiB top pad: +8% wall and 3x the faults;
    32 / 64 MiB thresholds: +25% peak RSS), where this leaves it as it was (wall and RSS within
    noise; RESULTS.md, "sharp's task at parity"). Other C libraries, or a preloaded allocator,
    are left alone."""
    if not is_glibc():
        return
    try:
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        libc.free(libc.malloc(MALLOC_WARM_BYTES))
    except (OSError, AttributeError):  # no libc symbols to call: leave it
        return


def is_glibc() -> bool:
    """Whether this process's C library is glibc (whose malloc _raise_malloc_thresholds
    tunes)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # the name is unknown to this platform
        return False


@dataclass
class Decoded:
    """A master in memory: upright, 8-bit sRGB (alpha kept), at `scale` of its oriented size.
    `streamed`: not in memory but decoded as its one reader pulls pixels (decode(once=True))."""

    image: pyvips.Image
    width: int  # oriented size of the master itself (before shrink-on-load)
    height: int
    scale: float
    streamed: bool = False


@dataclass(frozen=True)
class Header:
    loader: str  # a libvips loader, or HEIF / SVG
    width: int  # oriented (an SVG: its intrinsic size, rounded up)
    height: int
    max_pixels: int = DEFAULT_MAX_PIXELS  # the limit, for an SVG's raster (sized at decode)
    vector: svg.SvgHeader | None = None  # an SVG's exact intrinsic size


def _oriented(image: pyvips.Image) -> tuple[int, int]:
    orientation = image.get("orientation") if image.get_typeof("orientation") else 1
    if orientation in (5, 6, 7, 8):
        return image.height, image.width
    return image.width, image.height


def probe(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Read the header only: which loader, how big once upright. Raises MasterError if refused."""
    if not data:
        raise MasterError("empty file (0 bytes)")
    sniffed = formats.sniff_format(data[:formats.SNIFF_BYTES])
    if sniffed is not None and sniffed.name == "svg":
        vector = svg.probe(data, max_pixels)
        return Header(loader=SVG, width=math.ceil(vector.width), height=math.ceil(vector.height),
                      max_pixels=max_pixels, vector=vector)
    if sniffed is not None and sniffed.name == "heif":
        return _heif_header(data, max_pixels)
    try:  # a JPEG by name (Ultra HDR ones too: their SDR image); else the one libvips sniffs
        image = load(data, JPEG if sniffed is not None and sniffed.name == "jpeg" else None,
                     access="sequential")
    except pyvips.Error as exc:
        raise MasterError(f"not a supported image: {vips_message(exc)}") from None
    loader = image.get("vips-loader")
    if loader == "heifload_source" and image.get_typeof("heif-compression"):
        if image.get("heif-compression") != "av1":  # libvips here decodes AV1 only
            return _heif_header(data, max_pixels)  # an HEIC under a generic brand (mif1)
    if loader == "uhdrload_source":  # Ultra HDR after bytes fanout's sniff does not take as
        loader = JPEG  # a JPEG start (libjpeg skips them): its SDR image, as any JPEG
        try:
            image = load(data, JPEG, access="sequential")
        except pyvips.Error as exc:
            raise MasterError(f"not a supported image: {vips_message(exc)}") from None
    width, height = _oriented(image)
    _check_pixels(width, height, max_pixels)
    return Header(loader=loader, width=width, height=height, max_pixels=max_pixels)


def load(data: bytes, loader: str | None = None, **options: object) -> pyvips.Image:
    """An image read from `data` in place, by `loader` (a *load_source operation) or by the
    loader libvips sniffs, which must read one of fanout's master formats before it runs (a
    source can be sniffed by loaders a buffer is not, such as matrixload). new_from_buffer
    would copy the whole file first, for the header and again for the pixels (about 1 ms of a
    40 ms operation on a 1 MB JPEG). Raises MasterError for a format fanout refuses."""
    source = pyvips.Source.new_from_memory(data)
    if loader is None:
        found = pyvips.vips_lib.vips_foreign_find_load_source(source.pointer)
        if found == pyvips.ffi.NULL:
            raise pyvips.Error("unable to load from source")  # libvips' reason in its detail
        loader = pyvips.nickname_find(pyvips.type_from_name(pyvips.ffi.string(found).decode()))
        if master_format(loader) is None:
            kind = loader.removesuffix("_source").removesuffix("load")
            raise MasterError(f"image format not supported ({kind})")
    image = pyvips.Operation.call(loader, source, **options)
    # libvips reads `data` for as long as the image or anything made from it lives: the same
    # hidden reference pyvips' Image.new_from_memory keeps (operations pass it on to outputs)
    image._references.append(data)
    return image


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MasterError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )


def _heif_header(data: bytes, max_pixels: int) -> Header:
    found = heif.probe(data)
    _check_pixels(found.width, found.height, max_pixels)
    return Header(loader=HEIF, width=found.width, height=found.height, max_pixels=max_pixels)


def decode(data: bytes, header: Header, scale: float, once: bool = False) -> Decoded:
    """Load at (at least) `scale` of the master's size and bring it into memory, upright and sRGB.
    An SVG is drawn at `scale` (which may be above 1) and becomes a master of the raster's size.

    `once`: the caller reads the pixels once, in order (one derivative, no trim or attention
    pass). The decoded copy would then be written and read back for nothing (10% of sharp's
    benchmark task on 2 cores, in memory traffic): a JPEG, PNG, WebP... stays streamed and
    decodes as the derivative is made (errors in the pixels surface there). An image that
    needs turning is still copied (rotation reads out of order), as are HEIF and SVG."""
    if header.loader == SVG:
        assert header.vector is not None
        raster = svg.rasterise(data, header.vector, scale, header.max_pixels)
        try:
            image = ops.to_srgb(raster).copy_memory()
        except pyvips.Error as exc:
            raise MasterError(f"cannot decode image: {vips_message(exc)}") from None
        return Decoded(image=image, width=image.width, height=image.height, scale=1.0)
    options: dict[str, object] = {"access": "sequential", "fail_on": "truncated"}
    if header.loader == JPEG:
        options["shrink"] = jpeg_shrink(scale)
    elif header.loader == "webpload_source" and scale < 1.0:
        options["scale"] = scale
    try:
        if header.loader == HEIF:
            return _decode_heif(data, header, scale)
        # by the loader probe chose and checked (a JPEG by name: sniffing would pick uhdrload
        # for an Ultra HDR JPEG), not sniffed again
        image = load(data, header.loader, **options)
        # Colour first: it streams, so the sequential read stays in order. Rotating needs random
        # access, which the in-memory copy gives for free.
        image = ops.to_srgb(image)
        turned = image.get_typeof("orientation") and image.get("orientation") != 1
        streamed = once and not turned
        if not streamed:
            image = image.copy_memory()
        if turned:
            image = ops.autorotate(image).copy_memory()
    except pyvips.Error as exc:
        raise MasterError(f"cannot decode image: {vips_message(exc)}") from None
    return Decoded(image=image, width=header.width, height=header.height,
                   scale=image.width / header.width, streamed=streamed)


def _decode_heif(data: bytes, header: Header, scale: float) -> Decoded:
    """The primary image, upright already (libheif applies irot/imir), without a second
    full-size buffer: shrunk by the power of two `scale` allows (as JPEG shrink-on-load), else
    libheif's plane itself when it is 8-bit sRGB, else converted over it (heif.py: a copy
    beside a 200 MP plane peaked at 2.01x the decoded size; in place, 1.51x)."""
    plane = heif.load(data)
    shrink = jpeg_shrink(scale)
    try:
        if shrink == 1 and heif.ready(plane):  # libheif's plane is the master
            image = plane
        elif shrink == 1:
            image = heif.convert_in_place(plane, ops.to_srgb)
            if image is None:  # more bytes per pixel out than in (grey): a copy
                image = ops.to_srgb(plane).copy_memory()
        else:
            image = ops.to_srgb(plane.shrink(shrink, shrink)).copy_memory()
    except pyvips.Error as exc:
        raise MasterError(f"cannot decode image: {vips_message(exc)}") from None
    return Decoded(image=image, width=header.width, height=header.height,
                   scale=image.width / header.width)


def vips_message(exc: pyvips.Error) -> str:
    detail = (exc.detail or "").strip().splitlines()
    lines = [line.strip() for line in detail if line.strip()]
    return "; ".join(dict.fromkeys(lines)) or exc.message
