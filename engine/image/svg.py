"""SVG masters (brand marks, logos), rasterised safely by resvg at the size the outputs need.

libvips' own SVG loader (librsvg) is not meant for untrusted input, so fanout blocks it; resvg
(Rust, memory-safe; Apache-2.0/MIT), through the `resvg-py` binding (MIT), renders instead.
resvg runs no scripts, fetches no URLs and ignores foreignObject, but it does read local files
that an <image href> names (an absolute path too) and parses DTD entities. So, before resvg
sees a byte, `check` refuses:

- a file over MAX_SVG_BYTES, text that is not UTF-8, or that is not XML with an <svg> root;
- any internal DTD subset or declaration (ENTITY, ATTLIST, ...: no entity expansion, billion
  laughs fails here) and any xml-stylesheet instruction (a bare DOCTYPE line is allowed, and
  so is Adobe Illustrator's subset of a few literal text entities naming its namespaces:
  nothing in them nests or points outside the file);
- any href that is not a fragment (#id) or an embedded raster (data:image/png|jpeg|gif|webp),
  and any CSS url(...) that is not a fragment, or @import: nothing outside the file is read;
- an embedded raster over the pixel limit (checked from its header).

A refused SVG fails alone with one line. What is left is self-contained and rendered as is.

Size: the intrinsic size follows resvg's rules (width/height in px, pt, pc, mm, cm, in, em, ex;
a percentage of the viewBox; a missing side from the viewBox's aspect). An SVG with neither a
viewBox nor an absolute width and height is refused: resvg would size it by its drawing's
extent, unknown (and unbounded) before drawing. The raster is made at that
size times the scale the largest derivative needs, which may be above 1: a 100x100 logo is drawn
at 2000x2000 for a 2000 px output, never enlarged from a small bitmap. The raster's pixels are
held to the pixel limit. The background stays transparent (alpha kept, flattened by the presets
that flatten, as for PNG).
"""

from __future__ import annotations

import base64
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pyvips

from ..errors import MasterError

MAX_SVG_BYTES = 10 << 20  # brand marks are KBs; a 10 MB SVG is a photo traced to paths
EMBEDDED_RASTERS = ("png", "jpeg", "jpg", "gif", "webp")

_UNITS = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54,
          "in": 96.0, "em": 16.0, "ex": 8.0}
_LENGTH = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-z%]*)\s*$")
# An internal DTD subset and its declarations (entities, attribute defaults) and stylesheet
# instructions. A plain DOCTYPE naming the SVG DTD (Illustrator writes one) declares nothing:
# neither parser fetches an external DTD, and an undefined entity is a parse error.
_FORBIDDEN = re.compile(rb"<!DOCTYPE[^>]*\[|<!(?:ENTITY|ATTLIST|ELEMENT|NOTATION)|<\?xml-stylesheet",
                        re.IGNORECASE)
# The one internal subset allowed: Adobe Illustrator's "Save as SVG" declares its namespaces as
# plain text entities (<!ENTITY ns_ai "http://ns.adobe.com/...">) used in xmlns attributes.
# Literal text entities only (no &, %, < in them: nothing nests, so nothing multiplies; no
# SYSTEM/PUBLIC: nothing outside the file), a few of them, nothing else in the subset.
_SUBSET = re.compile(rb"<!DOCTYPE\s+svg\b[^\[>]*\[(.*?)\]\s*>", re.IGNORECASE | re.DOTALL)
_TEXT_ENTITY = re.compile(rb"\s*<!ENTITY\s+[A-Za-z_][\w.-]*\s+(?:\"[^\"&%<]*\"|'[^'&%<]*')\s*>")
MAX_TEXT_ENTITIES = 32
MAX_SUBSET_BYTES = 4096
_CSS_URL = re.compile(r"url\(\s*['\"]?\s*([^'\")\s]*)", re.IGNORECASE)
_DATA_IMAGE = re.compile(r"^data:image/([a-z+.-]+)\s*;\s*base64\s*,(.*)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class SvgHeader:
    width: float  # intrinsic size, CSS pixels
    height: float


def probe(data: bytes, max_pixels: int) -> SvgHeader:
    """Check the SVG is self-contained and safe to hand to resvg; its intrinsic size."""
    root = check(data, max_pixels)
    width, height = intrinsic_size(root)
    return SvgHeader(width=width, height=height)


def check(data: bytes, max_pixels: int) -> ET.Element:
    """The parsed root element, or MasterError naming the first thing refused."""
    if len(data) > MAX_SVG_BYTES:
        raise MasterError(f"SVG is {len(data)} bytes, over the limit of {MAX_SVG_BYTES}")
    subset = _SUBSET.search(data)
    if subset is not None and _text_entities_only(subset.group(1)):
        data_outside = data[:subset.start()] + data[subset.end():]
    else:
        data_outside = data
    if _FORBIDDEN.search(data_outside):
        raise MasterError("SVG refused: DTD declarations (ENTITY, ATTLIST...) or stylesheet "
                          "instructions are not allowed (entity expansion, outside files)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MasterError("SVG refused: not UTF-8 text") from None
    if "@import" in text:
        raise MasterError("SVG refused: CSS @import would read another file")
    for target in _CSS_URL.findall(text):
        if not target.startswith("#"):
            raise MasterError(f"SVG refused: url({_short(target)}) refers to something outside "
                              "the file")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise MasterError(f"not a valid SVG: {exc}") from None
    if _local(root.tag) != "svg":
        raise MasterError(f"not an SVG: the root element is <{_local(root.tag)}>")
    for element in root.iter():
        for name, value in element.attrib.items():
            if _local(name) == "href":
                _check_href(value.strip(), max_pixels)
    return root


def _text_entities_only(subset: bytes) -> bool:
    """The internal DTD subset declares only a few literal text entities (Illustrator's)."""
    if len(subset) > MAX_SUBSET_BYTES:
        return False
    at, count = 0, 0
    while (match := _TEXT_ENTITY.match(subset, at)) is not None:
        at, count = match.end(), count + 1
    return count <= MAX_TEXT_ENTITIES and not subset[at:].strip()


def _check_href(href: str, max_pixels: int) -> None:
    if href.startswith("#") or not href:
        return
    match = _DATA_IMAGE.match(href)
    if match is None or match.group(1).lower() not in EMBEDDED_RASTERS:
        raise MasterError(f"SVG refused: href {_short(href)} refers to something outside the "
                          "file (only #fragments and embedded PNG/JPEG/GIF/WebP are read)")
    try:
        raster = base64.b64decode(re.sub(r"\s+", "", match.group(2)), validate=True)
        header = pyvips.Image.new_from_buffer(raster, "", access="sequential")
    except (ValueError, pyvips.Error):
        raise MasterError("SVG refused: an embedded image is not a readable PNG/JPEG/GIF/WebP") \
            from None
    if header.width * header.height > max_pixels:
        raise MasterError(f"SVG refused: an embedded image is {header.width}x{header.height}, "
                          f"over the limit of {max_pixels} pixels")


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def intrinsic_size(root: ET.Element) -> tuple[float, float]:
    """The SVG's size in CSS pixels, by resvg's rules: absolute width and height as given; with a
    viewBox, a percentage is of the viewBox and a missing side keeps the viewBox's aspect.
    Without a viewBox, resvg sizes a drawing lacking an absolute width and height by its
    content's extent, which is unknown before drawing (and unbounded): refused."""
    view_box = _view_box(root.get("viewBox"))
    sides = []
    for attr, axis in (("width", 0), ("height", 1)):
        value = root.get(attr)
        if value is None:
            sides.append(None)
            continue
        number, unit = _length(value, attr)
        if unit != "%":
            sides.append(number * _UNITS[unit])
        elif view_box is not None:
            sides.append(view_box[axis] * number / 100)
        else:
            sides.append(None)
    width, height = sides
    if view_box is None and (width is None or height is None):
        raise MasterError("SVG refused: no viewBox and no absolute width and height, so its "
                          "size would be its drawing's extent (add a viewBox)")
    if view_box is not None:
        if width is None and height is None:
            width, height = view_box
        elif width is None:
            width = height * view_box[0] / view_box[1]
        elif height is None:
            height = width * view_box[1] / view_box[0]
    assert width is not None and height is not None
    if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
        raise MasterError(f"SVG has no drawable size ({width:g}x{height:g})")
    return width, height


def _length(value: str, attr: str) -> tuple[float, str]:
    match = _LENGTH.match(value)
    if match is None or (match.group(2) not in _UNITS and match.group(2) != "%"):
        raise MasterError(f"SVG {attr}={_short(value)} is not a length fanout understands")
    return float(match.group(1)), match.group(2)


def _view_box(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        numbers = [float(n) for n in re.split(r"[\s,]+", value.strip())]
    except ValueError:
        return None
    if len(numbers) != 4 or not (numbers[2] > 0 and numbers[3] > 0):
        return None
    return numbers[2], numbers[3]


def raster_size(header: SvgHeader, scale: float) -> tuple[int, int]:
    """The raster's size at `scale` of the intrinsic size (at least 1x1)."""
    return (max(1, math.ceil(header.width * scale - 1e-6)),
            max(1, math.ceil(header.height * scale - 1e-6)))


def rasterise(data: bytes, header: SvgHeader, scale: float, max_pixels: int) -> pyvips.Image:
    """The SVG drawn at `scale` of its intrinsic size: 8-bit sRGB with alpha, in memory."""
    import resvg_py  # imported here: only SVG masters pay for loading resvg

    width, height = raster_size(header, scale)
    if width * height > max_pixels:
        raise MasterError(
            f"SVG drawn at {width}x{height} = {width * height} pixels would be over the limit "
            f"of {max_pixels}")
    check(data, max_pixels)  # again: decode() may be handed bytes probe() never saw
    try:
        png = resvg_py.svg_to_bytes(svg_string=data.decode("utf-8-sig"), dpi=96.0,
                                    zoom=width / header.width)
        image = pyvips.Image.pngload_buffer(bytes(png), access="sequential").copy_memory()
    except (ValueError, RuntimeError, OSError, pyvips.Error) as exc:
        raise MasterError(f"cannot render SVG: {' '.join(str(exc).split())}") from None
    return image.copy(interpretation="srgb")
