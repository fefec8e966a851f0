"""HEIC/HEIF masters (what phones write), through pi-heif's libheif with its HEVC decoder.

The libvips wheel's libheif decodes AV1 only (AVIF), so an HEVC HEIF goes through pi-heif: the
decode-only build of pillow-heif by the same maintainer, with the same API (BSD-3 code; its
wheels bundle libheif and libde265, LGPL-3.0, and no encoder). pillow-heif's wheels also bundle
the x265 encoder, which makes them GPL-2.0 as a whole; fanout never encodes HEIC, so it uses
pi-heif (the tests use pillow-heif's encoder to make samples). Pillow itself is never used:
pi-heif's C module hands over libheif's decoded plane and pyvips reads it in place.

Order, as for every master: `probe` parses the container and reads the primary image's header
(size after libheif's irot/imir transforms, bit depth, alpha) without decoding a pixel, so the
pixel limit applies before any memory is committed; `load` then decodes that one image.

- Multi-image files: the primary image only; thumbnails, depth and auxiliary images are never
  decoded (libheif decodes an item only when asked).
- Orientation: libheif applies the container's irot/imir, which is what HEIF says is
  authoritative. iPhones also write EXIF orientation describing the same rotation: it is NOT
  applied again (the image carries no `orientation` field), so the result is upright once.
- Bit depth: 10- and 12-bit images come as 16-bit (libheif scales them to the full range), then
  ops.to_srgb makes 8-bit sRGB like any 16-bit master.
- Colour: an ICC profile (iPhones write Display P3) is attached as icc-profile-data, so
  ops.to_srgb converts it. Without one, nclx primaries decide: BT.709/sRGB (1) or unspecified
  (2) are sRGB already; Display P3 (12) gets libvips' built-in P3 profile; BT.2020 (9) is
  converted by matrix in linear light. Transfer is taken as sRGB's: an HDR (PQ/HLG) HEIC is not
  tone mapped and its colours are approximate.
- Memory: libheif's decoded plane is read in place by pyvips (pi-heif packs its rows in place).
  decode.py keeps an 8-bit sRGB plane as the master itself, converts any other in place
  (convert_in_place: a profile, 10/12 bit, BT.2020), or shrinks it on load where the outputs
  allow. So no second full-size buffer: the peak is libheif's own (its YCbCr planes beside the
  RGB one while it converts). Measured on a 200 MP HEIC, decode peak over the decoded 8-bit
  size: 1.51x, with or without a P3 profile (tests/test_master_formats.py holds it under 2x).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyvips

from ..errors import MasterError

# nclx colour_primaries (ITU-T H.273)
SRGB_PRIMARIES = (1, 2)  # BT.709 (= sRGB), unspecified
P3_PRIMARIES = 12  # SMPTE EG 432-1 (Display P3)
BT2020_PRIMARIES = 9

# Linear-light BT.2020 RGB -> BT.709 RGB (ITU-R BT.2087).
BT2020_TO_709 = [
    [1.6605, -0.5876, -0.0728],
    [-0.1246, 1.1329, -0.0083],
    [-0.0182, -0.1006, 1.1187],
]

# pi-heif mode -> bands; ";16" means 16-bit samples.
_BANDS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "RGBa": 4}


@dataclass(frozen=True)
class HeifHeader:
    width: int  # upright (libheif applies irot/imir)
    height: int
    bit_depth: int
    alpha: bool
    images: int  # top-level images in the file (the primary one is decoded)


def _open(data: bytes):  # noqa: ANN202 (pi_heif.HeifFile)
    """Parse the container (no pixels decoded); any libheif error is the master's problem."""
    import pi_heif  # imported here: only HEIF masters pay for loading libheif

    try:
        # remove_stride packs the rows in place (no second buffer, measured): one contiguous
        # plane that pyvips can read as it is
        return pi_heif.open_heif(data, convert_hdr_to_8bit=False, remove_stride=True)
    except (ValueError, RuntimeError, OSError, SyntaxError, EOFError) as exc:
        raise MasterError(f"cannot read HEIF: {_message(exc)}") from None


def _message(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def truncation(data: bytes) -> str | None:
    """What is missing when the file's top-level boxes claim more bytes than it has, else None.
    libheif decodes a grid image whose tiles lie past the end of the file with those tiles
    blank: truncated data must be an error, not a grey part of the image."""
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            return f"truncated HEIF: {len(data) - pos} stray bytes at the end"
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        header = 8
        if size == 1:  # a 64-bit size follows
            if pos + 16 > len(data):
                return "truncated HEIF: a box header is cut off"
            size, header = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:  # the last box, to the end of the file
            size = len(data) - pos
        if size < header:
            return f"corrupt HEIF: box {kind!r} has size {size}"
        if pos + size > len(data):
            name = kind.decode("latin-1")
            return (f"truncated HEIF: box '{name}' needs {pos + size} bytes, the file has "
                    f"{len(data)}")
        pos += size
    return None


def probe(data: bytes) -> HeifHeader:
    """The primary image's upright size, depth and alpha, from the container alone."""
    problem = truncation(data)
    if problem is not None:
        raise MasterError(problem)
    heif = _open(data)
    if len(heif) == 0:
        raise MasterError("cannot read HEIF: no image in the file")
    primary = heif[heif.primary_index]
    width, height = primary.size
    if width <= 0 or height <= 0:
        raise MasterError(f"cannot read HEIF: image size {width}x{height}")
    return HeifHeader(width=width, height=height, bit_depth=int(primary.info.get("bit_depth", 8)),
                      alpha=primary.has_alpha, images=len(heif))


def load(data: bytes) -> pyvips.Image:
    """The primary image, upright, as a pyvips image reading libheif's decoded plane in place
    (uchar or ushort, colour still as stored: decode.py's to_srgb converts and copies it)."""
    heif = _open(data)
    primary = heif[heif.primary_index]
    base, _, depth = primary.mode.partition(";")
    if base not in _BANDS:
        raise MasterError(f"cannot decode HEIF: unsupported pixel layout {primary.mode}")
    bands, wide = _BANDS[base], depth == "16"
    try:
        plane = primary.data  # decodes the primary image (and only it)
        stride = primary.stride
    except (ValueError, RuntimeError, OSError, SyntaxError, EOFError) as exc:
        raise MasterError(f"cannot decode HEIF: {_message(exc)}") from None
    width, height = primary.size
    image = _from_plane(plane, width, height, stride, bands, wide)
    # pi-heif's memoryview does not keep its owner alive (its .obj is None): the image must, or
    # libheif's plane is freed under it. pyvips carries an image's _references to every image
    # made from it (the mechanism new_from_memory itself uses for `data`).
    image._references.append(_Plane(owner=primary, memory=plane))
    if base == "RGBa":
        image = image.unpremultiply().cast("ushort" if wide else "uchar")
    image = image.copy(interpretation=_interpretation(bands, wide))
    return _attach_colour(image, primary.info)


def _from_plane(plane: memoryview, width: int, height: int, stride: int, bands: int,
               wide: bool) -> pyvips.Image:
    """Wrap the decoded plane without copying it (the image holds a reference to it)."""
    sample = 2 if wide else 1
    if stride != width * bands * sample or len(plane) < stride * height:
        raise MasterError(f"cannot decode HEIF: unexpected plane layout (stride {stride})")
    return pyvips.Image.new_from_memory(plane, width, height, bands, "ushort" if wide else "uchar")


@dataclass(frozen=True, eq=False)
class _Plane:
    """libheif's decoded plane: its owner, kept alive by every image made from it."""

    owner: object
    memory: memoryview


# convert_in_place works in strips of about this many input bytes (its only extra memory).
STRIP_BYTES = 8 << 20


def convert_in_place(image: pyvips.Image,
                     convert: Callable[[pyvips.Image], pyvips.Image]) -> pyvips.Image | None:
    """`convert(image)` written over the decoded plane `image` reads, strip by strip, and read
    from there: no second full-size buffer. None where it cannot be (not an image `load` made,
    or the result needs more bytes per pixel than the plane holds, as grey to RGB).

    Safe because the conversion is pointwise (colour, depth, alpha: ops.to_srgb, the BT.2020
    matrix) and a strip's output, no larger per row than its input, lands at or before the
    input rows already read; nothing else reads the plane. pi-heif exposes the plane
    read-only, so the writable view is made from its address."""
    plane = next((r for r in image._references if isinstance(r, _Plane)), None)
    if plane is None:
        return None
    in_row = plane.memory.nbytes // image.height
    first = convert(image.crop(0, 0, image.width, 1))
    if first.format != "uchar" or first.width * first.bands > in_row:
        return None
    readonly = np.frombuffer(plane.memory, np.uint8)
    address = readonly.__array_interface__["data"][0]
    target = np.ctypeslib.as_array((ctypes.c_uint8 * readonly.size).from_address(address))
    rows, at = max(1, STRIP_BYTES // in_row), 0
    for top in range(0, image.height, rows):
        strip = convert(image.crop(0, top, image.width, min(rows, image.height - top)))
        pixels = strip.write_to_memory()
        target[at:at + len(pixels)] = np.frombuffer(pixels, np.uint8)
        at += len(pixels)
    out = pyvips.Image.new_from_memory(target[:at], image.width, image.height, first.bands,
                                       "uchar")
    out._references.append(plane)
    return out.copy(interpretation=first.interpretation)


def ready(image: pyvips.Image) -> bool:
    """`load`'s image is already what decode.py would make (8-bit sRGB, alpha or not, no
    profile to apply): then the decoded plane itself is the master in memory, with no copy."""
    return (image.format == "uchar" and image.interpretation == "srgb" and image.bands in (3, 4)
            and not image.get_typeof("icc-profile-data"))


def _interpretation(bands: int, wide: bool) -> str:
    if bands < 3:
        return "grey16" if wide else "b-w"
    return "rgb16" if wide else "srgb"


def _attach_colour(image: pyvips.Image, info: dict) -> pyvips.Image:
    """Label the colour so ops.to_srgb converts it: the ICC profile, else the nclx primaries."""
    icc = info.get("icc_profile")
    if icc:
        image = image.copy()
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", bytes(icc))
        return image
    primaries = (info.get("nclx_profile") or {}).get("color_primaries", 2)
    if primaries == P3_PRIMARIES and image.bands >= 3:
        image = image.copy()
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data",
                       pyvips.Image.profile_load("p3"))
        return image
    if primaries == BT2020_PRIMARIES and image.bands >= 3:
        return bt2020_to_srgb(image)
    return image  # sRGB / BT.709, unspecified, or something rarer read as sRGB


def bt2020_to_srgb(image: pyvips.Image) -> pyvips.Image:
    """BT.2020 primaries to sRGB: to linear light (the sRGB curve), the BT.2087 matrix, clip to
    the sRGB gamut, back to 16-bit sRGB (alpha kept)."""
    alpha = image[3] if image.bands > 3 else None
    peak = 65535.0 if image.format == "ushort" else 255.0
    v = image[:3].cast("float") / peak
    linear = (v <= 0.04045).ifthenelse(v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    mixed = linear.recomb(pyvips.Image.new_from_array(BT2020_TO_709))
    mixed = (mixed < 0).ifthenelse(0.0, (mixed > 1).ifthenelse(1.0, mixed))
    out = mixed.copy(interpretation="scrgb").colourspace("rgb16")
    if alpha is not None:
        out = out.bandjoin(alpha.cast("ushort") * (1 if alpha.format == "ushort" else 257))
    return out.cast("ushort").copy(interpretation="rgb16")
