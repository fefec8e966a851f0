"""The image steps, each a small function from image to image (imgproxy's pipeline is the model).

The order they run in is visible in one place: decode.py for the once-per-master steps
(orient, colour, shrink-on-load) and render.py for the per-derivative steps.
"""

from __future__ import annotations

import numpy as np
import pyvips

from ..geometry import Box

SRGB_BANDS = 3


def autorotate(image: pyvips.Image) -> pyvips.Image:
    """Apply the EXIF orientation to the pixels and drop the tag, so outputs are upright."""
    return image.autorot()


def to_srgb(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB (plus alpha if present), from whatever came in.

    An embedded ICC profile is honoured (CMYK, Adobe RGB, P3, grey...); CMYK without a profile
    goes through libvips' built-in CMYK profile; 16-bit, greyscale, Lab and the rest go through
    libvips' colourspace conversion. Alpha is kept, scaled to 8 bits.
    """
    if _is_srgb8(image) and image.bands == SRGB_BANDS and not image.get_typeof("icc-profile-data"):
        return image  # already what comes out (most JPEGs): no operation to build and run
    alpha = None
    if image.hasalpha():
        alpha = _to_uchar(image[image.bands - 1])
        image = image[: image.bands - 1]
    image = _colour_to_srgb(image)
    if image.bands == 1:  # grey that was already labelled sRGB
        image = image.bandjoin([image, image])
    if image.bands > SRGB_BANDS:  # extract_band costs a pass over every pixel: only if needed
        image = image[:SRGB_BANDS]
    image = _srgb8(_to_uchar(image))
    return image if alpha is None else image.bandjoin(alpha)


def _is_srgb8(image: pyvips.Image) -> bool:
    return image.format == "uchar" and image.interpretation == "srgb"


def _srgb8(image: pyvips.Image) -> pyvips.Image:
    """8-bit pixels labelled sRGB; unchanged (no operation) when they are already."""
    if image.format != "uchar":
        image = image.cast("uchar")
    return image if image.interpretation == "srgb" else image.copy(interpretation="srgb")


def _colour_to_srgb(image: pyvips.Image) -> pyvips.Image:
    if image.get_typeof("icc-profile-data"):
        try:
            return image.icc_transform("srgb", embedded=True, depth=8)
        except pyvips.Error:
            pass  # a broken profile: fall back to the colourspace route
    if image.interpretation == "cmyk":
        return image.icc_transform("srgb", input_profile="cmyk", depth=8)
    if image.interpretation not in _KNOWN_SPACES:
        image = _guess_interpretation(image)
    return image.colourspace("srgb")


_KNOWN_SPACES = frozenset(
    {"srgb", "rgb", "rgb16", "b-w", "grey16", "lab", "labq", "labs", "lch", "cmc", "xyz", "yxy",
     "scrgb", "hsv", "cmyk"}
)


def _to_uchar(image: pyvips.Image) -> pyvips.Image:
    if image.format == "uchar":
        return image
    peak = {"char": 127.0, "ushort": 65535.0, "short": 32767.0, "float": 1.0,
            "double": 1.0}.get(image.format, 65535.0)
    return (image * (255.0 / peak)).cast("uchar")


def _guess_interpretation(image: pyvips.Image) -> pyvips.Image:
    wide = image.format in ("ushort", "short")
    if image.bands < 3:
        return image.copy(interpretation="grey16" if wide else "b-w")
    return image.copy(interpretation="rgb16" if wide else "srgb")


def flatten(image: pyvips.Image, background: tuple[int, int, int]) -> pyvips.Image:
    """Composite alpha onto a solid background (for formats without alpha, and for trimming)."""
    if not image.hasalpha():
        return image
    return _srgb8(image.flatten(background=list(background)))


TRIM_DETECT_SIZE = 1024


def mask_box(mask: pyvips.Image, min_pixels: int = 1) -> Box | None:
    """Bounding box of a 0/255 mask's set pixels; a row or column counts when it has at least
    `min_pixels` of them. None when nothing is set."""
    columns, rows = mask.project()
    xs = np.flatnonzero(columns.numpy().reshape(-1) >= 255 * min_pixels)
    ys = np.flatnonzero(rows.numpy().reshape(-1) >= 255 * min_pixels)
    if xs.size == 0 or ys.size == 0:
        return None
    return Box(int(xs[0]), int(ys[0]), int(xs[-1] - xs[0]) + 1, int(ys[-1] - ys[0]) + 1)


def trim_box(image: pyvips.Image, threshold: float) -> Box | None:
    """The box of the content inside a near-uniform border, or None where there is none.

    With alpha, the border is what is transparent; otherwise the background is the median of the
    four corners (robust to one corner touched by the product or a shadow). The search runs on a
    box-filtered copy at most TRIM_DETECT_SIZE on its long side, which also smooths away JPEG
    noise; a row or column counts as content when more than one of its pixels differs from the
    background by over `threshold`. The box is widened by one reduced pixel on each side so it
    never cuts into the content.
    """
    factor = max(1, -(-max(image.width, image.height) // TRIM_DETECT_SIZE))
    small = image.shrink(factor, factor) if factor > 1 else image
    if small.hasalpha():
        mask = small[small.bands - 1] > threshold
    else:
        w, h = small.width - 1, small.height - 1
        corners = [small.getpoint(x, y) for x, y in ((0, 0), (w, 0), (0, h), (w, h))]
        background = [sum(sorted(c[b] for c in corners)[1:3]) / 2 for b in range(small.bands)]
        mask = ((small - background).abs() > threshold).bandor()
    found = mask_box(mask, min_pixels=2)
    if found is None:
        return None
    x0, y0 = max(0, (found.left - 1) * factor), max(0, (found.top - 1) * factor)
    x1 = min(image.width, (found.left + found.width + 1) * factor)
    y1 = min(image.height, (found.top + found.height + 1) * factor)
    if (x1 - x0, y1 - y0) == (image.width, image.height):
        return None
    return Box(x0, y0, x1 - x0, y1 - y0)


def resize_exact(image: pyvips.Image, width: int, height: int) -> pyvips.Image:
    """Lanczos resize to exactly width x height, premultiplying alpha so edges do not halo."""
    if (image.width, image.height) == (width, height):
        return image
    hscale, vscale = width / image.width, height / image.height
    if image.hasalpha():
        out = image.premultiply().resize(hscale, vscale=vscale, kernel="lanczos3")
        out = out.unpremultiply()
    else:
        out = image.resize(hscale, vscale=vscale, kernel="lanczos3")
    if (out.width, out.height) != (width, height):  # float rounding: settle the last pixel
        out = out.gravity("centre", width, height, extend="copy")
    return _srgb8(out)


def crop(image: pyvips.Image, box: Box) -> pyvips.Image:
    return image.crop(box.left, box.top, box.width, box.height)


def smart_crop(image: pyvips.Image, width: int, height: int) -> pyvips.Image:
    """Crop to width x height keeping the most 'interesting' part (libvips attention strategy)."""
    return image.smartcrop(width, height, interesting="attention")


def smart_crop_offset(image: pyvips.Image, width: int, height: int) -> tuple[int, int]:
    """Where smart_crop would cut a width x height window: its (left, top)."""
    window = image.smartcrop(width, height, interesting="attention")
    return -window.xoffset, -window.yoffset


def pad(
    image: pyvips.Image,
    canvas: tuple[int, int],
    offset: tuple[int, int],
    background: tuple[int, int, int],
) -> pyvips.Image:
    """Place the image on a canvas of the background colour (transparent where alpha is kept)."""
    if (image.width, image.height) == canvas:
        return image
    fill = list(background) + ([0] if image.hasalpha() else [])
    return image.embed(offset[0], offset[1], canvas[0], canvas[1], extend="background",
                       background=fill)
