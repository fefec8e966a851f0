"""Walk one image master: decode once, then make every distinct recipe from the decoded pixels.

Per derivative, in order (the whole pipeline, visible in one place):
  base      alpha kept (formats with alpha) or flattened onto the preset's background
  trim      crop to the content inside a near-uniform border (box found once per base/threshold)
  scale     Lanczos to the layout's size, from the smallest sufficient in-memory intermediate
  crop      gravity crop or attention smart crop (fill)
  pad       centre on the canvas in the background colour (pad)
  encode    per-format savers, metadata stripped, byte budget
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pyvips

from ..errors import MasterError
from ..geometry import PYRAMID_MIN_RATIO, Box, Layout, layout, needed_scale
from ..spec.models import ImagePreset, parse_colour
from . import decode as dec
from . import ops
from .encode import encode

# An attention analysis looks at no more than this many canvases' worth of pixels.
ATTENTION_BUDGET = 4.0

ENGINE_ID = f"fanout-image-1/libvips-{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"


@dataclass(frozen=True)
class Rendered:
    data: bytes
    format: str
    width: int
    height: int
    quality: int | None
    render_ms: float


class Pyramid:
    """Resized copies of one base image kept in memory; smaller sizes come from the nearest one.

    A size asked for twice (the WebP and the JPEG of one output, say) is resized once. A new
    size is made from a level only where it holds at least PYRAMID_MIN_RATIO source pixels per
    output pixel along both axes, which keeps the result indistinguishable from a direct resize.
    """

    def __init__(self, base: pyvips.Image) -> None:
        self.base = base
        self.levels: list[tuple[float, float, pyvips.Image]] = [(1.0, 1.0, base)]
        self._made: dict[tuple[Box | None, int, int], pyvips.Image] = {}

    def scaled(self, region: Box | None, width: int, height: int) -> pyvips.Image:
        if region is None and (width, height) == (self.base.width, self.base.height):
            return self.base  # already in memory: no copy
        key = (region, width, height)
        if key not in self._made:
            out = self._resize(region, width, height).copy_memory()
            if region is None:
                self.levels.append((width / self.base.width, height / self.base.height, out))
            self._made[key] = out
        return self._made[key]

    def _resize(self, region: Box | None, width: int, height: int) -> pyvips.Image:
        box = region or Box(0, 0, self.base.width, self.base.height)
        usable = [
            lvl for lvl in self.levels
            if box.width * lvl[0] >= PYRAMID_MIN_RATIO * width
            and box.height * lvl[1] >= PYRAMID_MIN_RATIO * height
        ]
        sx, sy, source = min(usable, key=lambda lvl: lvl[0]) if usable else self.levels[0]
        if region is not None:
            left, top = int(round(box.left * sx)), int(round(box.top * sy))
            w = min(source.width - left, max(1, int(round(box.width * sx))))
            h = min(source.height - top, max(1, int(round(box.height * sy))))
            source = source.crop(left, top, w, h)
        return ops.resize_exact(source, width, height)


class MasterRenderer:
    """Everything one master's derivatives share: the decoded image, bases, trim boxes."""

    def __init__(self, decoded: dec.Decoded) -> None:
        self.decoded = decoded
        self._pyramids: dict[object, Pyramid] = {}
        self._trims: dict[tuple[object, float], Box | None] = {}

    def _base_key(self, preset: ImagePreset) -> object:
        if preset.has_alpha_output and self.decoded.image.hasalpha():
            return "alpha"
        return parse_colour(preset.background)

    def _pyramid(self, key: object) -> Pyramid:
        if key not in self._pyramids:
            image = self.decoded.image
            if key != "alpha":
                image = ops.flatten(image, key).copy_memory() if image.hasalpha() else image
            self._pyramids[key] = Pyramid(image)
        return self._pyramids[key]

    def _trim(self, key: object, threshold: float) -> Box | None:
        if (key, threshold) not in self._trims:
            self._trims[(key, threshold)] = ops.trim_box(self._pyramid(key).base, threshold)
        return self._trims[(key, threshold)]

    def _fill(self, pyramid: Pyramid, region: Box | None, plan: Layout) -> pyvips.Image:
        """Cover the canvas and crop: only the window that survives the crop is resized.

        The window's place comes from the gravity, or from an attention analysis run on the
        covering image, itself shrunk when it would be more than ATTENTION_BUDGET canvases
        (a 3x1000 master covering a 9:16 frame would otherwise be 1080x360000 pixels).
        """
        (sw, sh), (cw, ch) = plan.scaled, plan.canvas
        box = region or Box(0, 0, pyramid.base.width, pyramid.base.height)
        if plan.smart_crop:
            k = math.sqrt(sw * sh / (ATTENTION_BUDGET * cw * ch))
            if k <= 1.0:
                return ops.smart_crop(pyramid.scaled(region, sw, sh), cw, ch)
            aw, ah = max(1, round(sw / k)), max(1, round(sh / k))
            analysis = pyramid.scaled(region, aw, ah)
            left, top = ops.smart_crop_offset(analysis, min(aw, max(1, round(cw / k))),
                                              min(ah, max(1, round(ch / k))))
            x, y = left * sw / aw, top * sh / ah
        else:
            assert plan.crop is not None
            x, y = plan.crop.left, plan.crop.top
        fx, fy = box.width / sw, box.height / sh
        w, h = min(box.width, max(1, round(cw * fx))), min(box.height, max(1, round(ch * fy)))
        left = min(box.left + box.width - w, box.left + round(x * fx))
        top = min(box.top + box.height - h, box.top + round(y * fy))
        return pyramid.scaled(Box(left, top, w, h), cw, ch)

    def render(self, preset: ImagePreset) -> Rendered:
        start = time.perf_counter()
        key = self._base_key(preset)
        pyramid = self._pyramid(key)
        region = self._trim(key, preset.trim.threshold) if preset.trim else None
        if region is not None:
            src_w, src_h = region.width / self.decoded.scale, region.height / self.decoded.scale
        else:
            src_w, src_h = self.decoded.width, self.decoded.height
        plan = layout(max(1, round(src_w)), max(1, round(src_h)), preset.resize)
        if plan.crop is None and not plan.smart_crop:
            image = pyramid.scaled(region, *plan.scaled)
        else:
            image = self._fill(pyramid, region, plan)
        image = ops.pad(image, plan.canvas, plan.offset, parse_colour(preset.background))
        data, quality = encode(image, preset)
        return Rendered(
            data=data,
            format=preset.format,
            width=image.width,
            height=image.height,
            quality=quality if preset.format != "png" else None,
            render_ms=(time.perf_counter() - start) * 1000,
        )


def decode_for(data: bytes, presets: list[ImagePreset], max_pixels: int) -> dec.Decoded:
    """Probe, then decode once at the largest size any of `presets` needs."""
    header = dec.probe(data, max_pixels)
    scale = max(
        (needed_scale(header.width, header.height, p.resize, p.trim is not None) for p in presets),
        default=1.0,
    )
    return dec.decode(data, header, scale)


def render_all(
    data: bytes, presets: dict[str, ImagePreset], max_pixels: int = dec.DEFAULT_MAX_PIXELS
) -> tuple[dict[str, Rendered | MasterError], float]:
    """Render each distinct recipe (keyed by recipe hash) of one master.

    Largest outputs go first so their in-memory intermediates can serve the smaller ones.
    Returns per-recipe results (a MasterError for a recipe that failed alone) and decode ms.
    Raises MasterError when the master itself cannot be decoded.
    """
    start = time.perf_counter()
    decoded = decode_for(data, list(presets.values()), max_pixels)
    decode_ms = (time.perf_counter() - start) * 1000
    return render_decoded(decoded, presets), decode_ms


def from_image(image: pyvips.Image) -> dec.Decoded:
    """An upright 8-bit sRGB image already in memory (a video still) as a decoded master."""
    return dec.Decoded(image=image, source_format="video-frame", width=image.width,
                       height=image.height, scale=1.0, pages=1)


def render_decoded(
    decoded: dec.Decoded, presets: dict[str, ImagePreset]
) -> dict[str, Rendered | MasterError]:
    """Each recipe from one decoded master; a recipe that fails gets its MasterError."""
    renderer = MasterRenderer(decoded)
    order = sorted(
        presets.items(),
        key=lambda kv: -(kv[1].resize.width or 0) * (kv[1].resize.height or kv[1].resize.width or 0),
    )
    results: dict[str, Rendered | MasterError] = {}
    for recipe, preset in order:
        try:
            results[recipe] = renderer.render(preset)
        except MasterError as exc:
            results[recipe] = exc
        except pyvips.Error as exc:
            results[recipe] = MasterError(f"render failed: {dec.vips_message(exc)}")
    return results
