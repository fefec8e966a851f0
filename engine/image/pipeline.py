"""The per-derivative image pipeline as data: `STEPS`, an ordered list of small steps.

Each step takes the `Work` of one derivative, does one thing to it and hands it on; `run` is
the whole pipeline. What runs once per master (decode, orient, colour, shrink-on-load) is in
decode.py; what derivatives of one master share (the base per background, its pyramid of
resized copies, the trim boxes) lives in the caches `Work` carries, owned by render.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pyvips

from ..errors import MasterError
from ..geometry import (
    PYRAMID_MIN_RATIO,
    Box,
    Framing,
    Layout,
    box_problem,
    box_to_aspect,
    focus_offset,
)
from ..geometry import layout as plan_layout
from ..geometry import needed_scale as plan_scale
from ..spec.models import ImagePreset, parse_colour, upscale_limit
from . import decode as dec
from . import ops
from .encode import Scoring, save
from .encode import describe as describe_encoder

# An attention analysis looks at no more than this many canvases' worth of pixels.
ATTENTION_BUDGET = 4.0

# Which base a derivative starts from: the master with its alpha, or flattened onto a colour.
BaseKey = str | tuple[int, int, int]


class Pyramid:
    """Resized copies of one base image kept in memory; smaller sizes come from the nearest one.

    A size asked for twice (the WebP and the JPEG of one output, say) is resized once. A new
    size is made from a level only where it holds at least PYRAMID_MIN_RATIO source pixels per
    output pixel along both axes, which keeps the result indistinguishable from a direct resize.

    `streamed`: the base is a streamed decode with one reader (decode(once=True)); its one
    resize is not kept but streams on into the encoder, so decoding, resizing and encoding run
    as one pipeline (a copy in memory between them cost 8-10% of sharp's task on 2 cores).
    """

    def __init__(self, base: pyvips.Image, streamed: bool = False) -> None:
        self.base = base
        self.streamed = streamed
        self.levels: list[tuple[float, float, pyvips.Image]] = [(1.0, 1.0, base)]
        self._made: dict[tuple[Box | None, int, int], pyvips.Image] = {}

    def scaled(self, region: Box | None, width: int, height: int) -> pyvips.Image:
        if region is None and (width, height) == (self.base.width, self.base.height):
            return self.base  # already in memory: no copy
        key = (region, width, height)
        if key not in self._made:
            out = self._resize(region, width, height)
            if not self.streamed:
                out = out.copy_memory()
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
            left, top = round(box.left * sx), round(box.top * sy)
            w = min(source.width - left, max(1, round(box.width * sx)))
            h = min(source.height - top, max(1, round(box.height * sy)))
            source = source.crop(left, top, w, h)
        return ops.resize_exact(source, width, height)


@dataclass
class Lineage:
    """What the steps decided, in master pixels (upright, before shrink-on-load): for the
    manifest."""

    trim: Box | None = None  # the content box trim found (None: no trim asked, or no border)
    shown: Box | None = None  # the part of the master the output shows, after trim and crop
    scale: float = 1.0  # output pixels per master pixel
    # how the crop window was placed: a gravity, "attention", "focus" (the editor's focal
    # point), "editor" (the editor's crop box), or None
    crop: str | None = None


@dataclass
class Work:
    """One derivative in the making: its recipe, the master's shared caches, what steps decided.

    Fields below the caches are set by the steps in order; reading one before its step has run
    raises AttributeError, which is what a reordered STEPS should get.
    """

    preset: ImagePreset
    decoded: dec.Decoded
    pyramids: dict[BaseKey, Pyramid]  # shared by every derivative of the master
    trims: dict[tuple[BaseKey, float], Box | None]
    base_key: BaseKey = field(init=False, repr=False)  # base
    pyramid: Pyramid = field(init=False, repr=False)  # base
    region: Box | None = None  # trim, window: the part of the base to resize (None: all of it)
    plan: Layout = field(init=False, repr=False)  # layout
    size: tuple[int, int] = field(init=False, repr=False)  # window: what `region` becomes
    smart_cut: bool = False  # window: attention crops the resized image after scale
    image: pyvips.Image = field(init=False, repr=False)  # scale, crop, pad
    data: bytes = b""  # encode
    quality: int = 0  # encode
    encoder: str = ""  # encode: the saver and its options, as text (the manifest's `encoder`)
    score: float | None = None  # encode: SSIMULACRA2 of the file (quality = "auto")
    scoring: Scoring | None = None  # shared by the master's derivatives (references, hints)
    lineage: Lineage = field(default_factory=Lineage)
    framing: Framing | None = None  # the editor's focal point / crop box (fill outputs)

    def to_master(self, box: Box) -> Box:
        """A box of base pixels in master pixels (the base may be shrunk on load)."""
        sx = self.decoded.width / self.decoded.image.width
        sy = self.decoded.height / self.decoded.image.height
        return Box(round(box.left * sx), round(box.top * sy), round(box.width * sx),
                   round(box.height * sy))


def base(work: Work) -> Work:
    """Keep alpha or flatten onto the background: first, as every later step reads the base."""
    image, colour = work.decoded.image, parse_colour(work.preset.background)
    keep_alpha = work.preset.has_alpha_output and image.hasalpha()
    work.base_key = "alpha" if keep_alpha else colour
    if work.base_key not in work.pyramids:
        if not keep_alpha and image.hasalpha():
            image = ops.flatten(image, colour).copy_memory()
        work.pyramids[work.base_key] = Pyramid(image, streamed=work.decoded.streamed)
    work.pyramid = work.pyramids[work.base_key]
    return work


def trim(work: Work) -> Work:
    """Narrow to the content inside a uniform border: before layout, so the fit sizes content."""
    if work.preset.trim is None:
        return work
    cache_key = (work.base_key, work.preset.trim.threshold)
    if cache_key not in work.trims:
        work.trims[cache_key] = ops.trim_box(work.pyramid.base, work.preset.trim.threshold)
    work.region = work.trims[cache_key]
    work.lineage.trim = None if work.region is None else work.to_master(work.region)
    return work


def layout(work: Work) -> Work:
    """Plan size, crop and canvas from the region: after trim, before any pixel is resized."""
    decoded, region = work.decoded, work.region
    if region is not None:
        src_w, src_h = region.width / decoded.scale, region.height / decoded.scale
    else:
        src_w, src_h = decoded.width, decoded.height
    work.plan = plan_layout(max(1, round(src_w)), max(1, round(src_h)), work.preset.resize)
    work.size = work.plan.scaled
    work.lineage.scale = work.plan.scaled[0] / src_w
    check_upscale(src_w, src_h, work.plan, upscale_limit(work.preset.upscale))
    return work


def check_upscale(src_w: float, src_h: float, plan: Layout, limit: float | None) -> None:
    """Refuse a plan that enlarges its source beyond the preset's `upscale` limit (one pixel
    of rounding slack per side, so an exact 2x of an odd size still counts as 2x)."""
    (sw, sh), (cw, ch) = plan.scaled, plan.canvas
    if limit is None or (sw <= src_w * limit + 1 and sh <= src_h * limit + 1):
        return
    factor = max(sw / src_w, sh / src_h)
    raise MasterError(
        f"would upscale {round(src_w)}x{round(src_h)} to {cw}x{ch} ({factor:.2f}x, preset allows "
        f"at most {limit:g}x): a larger master, or upscale = \"allow\" (or a factor) in the "
        "preset")


def window(work: Work) -> Work:
    """Fill: pick the window the crop keeps, before scale, so only that window is resized."""
    # An editor's crop box wins over everything (trim included); a focal point places the
    # window instead of gravity or attention, as near its centre as the frame allows.
    plan, whole, framing = work.plan, _whole(work), work.framing
    fill = work.preset.resize.fit == "fill"
    if fill and framing is not None and framing.box is not None:
        return _editor_window(work, framing)
    work.lineage.shown = work.to_master(whole)
    if plan.crop is None and not plan.smart_crop:
        return work
    if fill and framing is not None and framing.focus is not None:
        base_w, base_h = work.pyramid.base.width, work.pyramid.base.height
        (sw, sh), (cw, ch) = plan.scaled, plan.canvas
        fx = (framing.focus[0] * base_w - whole.left) * sw / whole.width
        fy = (framing.focus[1] * base_h - whole.top) * sh / whole.height
        x, y = focus_offset(sw, sh, cw, ch, fx, fy)
        work.region, work.size = _base_window(whole, plan, x, y), plan.canvas
        work.lineage.shown = work.to_master(work.region)
        work.lineage.crop = "focus"
        return work
    work.lineage.crop = work.preset.resize.gravity
    if plan.smart_crop and _analysis_shrink(plan) <= 1.0:
        # The covering image is small enough to analyse whole, and the analysis needs it
        # resized anyway: resize it once (scale), then let crop cut the window out of it.
        work.smart_cut = True
        return work
    if plan.smart_crop:
        x, y = _attention_at(work.pyramid, work.region, plan)
    else:
        assert plan.crop is not None
        x, y = plan.crop.left, plan.crop.top
    work.region, work.size = _base_window(whole, plan, x, y), plan.canvas
    work.lineage.shown = work.to_master(work.region)
    return work


def _editor_window(work: Work, framing: Framing) -> Work:
    """The editor's box (master pixels), narrowed to the output's aspect, as the region."""
    assert framing.box is not None
    decoded = work.decoded
    problem = box_problem(framing.box, decoded.width, decoded.height)
    if problem:
        x, y, w, h = framing.box
        raise MasterError(f"crop box {framing.key} = [{x}, {y}, {w}, {h}] {problem}")
    cw, ch = work.plan.canvas
    box = box_to_aspect(framing.box, cw, ch)
    try:  # a box smaller than the output enlarges it: as far as the preset allows
        check_upscale(box.width, box.height, replace(work.plan, scaled=(cw, ch)),
                      upscale_limit(work.preset.upscale))
    except MasterError as exc:
        x, y, w, h = framing.box
        raise MasterError(f"crop box {framing.key} = [{x}, {y}, {w}, {h}]: {exc}") from None
    sx = work.pyramid.base.width / decoded.width
    sy = work.pyramid.base.height / decoded.height
    left, top = round(box.left * sx), round(box.top * sy)
    right = min(work.pyramid.base.width, max(left + 1, round((box.left + box.width) * sx)))
    bottom = min(work.pyramid.base.height, max(top + 1, round((box.top + box.height) * sy)))
    work.region, work.size = Box(left, top, right - left, bottom - top), (cw, ch)
    work.lineage.shown = box
    work.lineage.scale = cw / box.width
    work.lineage.crop = "editor"
    return work


def needed_scale(src_w: int, src_h: int, preset: ImagePreset, framing: Framing | None) -> float:
    """The scale of the whole master a derivative needs (decode shrinks on load to the largest
    any derivative needs): an editor's box needs its own pixels at the output's size."""
    resize = preset.resize
    if (resize.fit == "fill" and framing is not None and framing.box is not None
            and box_problem(framing.box, src_w, src_h) is None):
        assert resize.width is not None and resize.height is not None
        box = box_to_aspect(framing.box, resize.width, resize.height)
        return min(1.0, max(resize.width / box.width, resize.height / box.height))
    return plan_scale(src_w, src_h, resize, preset.trim is not None)


def _whole(work: Work) -> Box:
    """The region before any crop window, in base pixels: the trim box or the whole base."""
    return work.region or Box(0, 0, work.pyramid.base.width, work.pyramid.base.height)


def _analysis_shrink(plan: Layout) -> float:
    """How much to shrink the covering image so it is at most ATTENTION_BUDGET canvases (a
    3x1000 master covering a 9:16 frame would otherwise be 1080x360000 pixels)."""
    (sw, sh), (cw, ch) = plan.scaled, plan.canvas
    return math.sqrt(sw * sh / (ATTENTION_BUDGET * cw * ch))


def _attention_at(pyramid: Pyramid, region: Box | None, plan: Layout) -> tuple[float, float]:
    """Where attention places the canvas in the covering image, found on a shrunk copy."""
    (sw, sh), (cw, ch) = plan.scaled, plan.canvas
    k = _analysis_shrink(plan)
    aw, ah = max(1, round(sw / k)), max(1, round(sh / k))
    left, top = ops.smart_crop_offset(pyramid.scaled(region, aw, ah),
                                      min(aw, max(1, round(cw / k))),
                                      min(ah, max(1, round(ch / k))))
    return left * sw / aw, top * sh / ah


def _base_window(whole: Box, plan: Layout, x: float, y: float) -> Box:
    """The canvas-sized window at (x, y) of the covering image, in base pixels inside `whole`."""
    (sw, sh), (cw, ch) = plan.scaled, plan.canvas
    fx, fy = whole.width / sw, whole.height / sh
    w, h = min(whole.width, max(1, round(cw * fx))), min(whole.height, max(1, round(ch * fy)))
    left = min(whole.left + whole.width - w, whole.left + round(x * fx))
    top = min(whole.top + whole.height - h, whole.top + round(y * fy))
    return Box(left, top, w, h)


def scale(work: Work) -> Work:
    """Resize the region from the nearest in-memory intermediate (Pyramid); once per size."""
    shown, limit = work.lineage.shown, upscale_limit(work.preset.upscale)
    if work.lineage.crop == "editor" and shown is not None and limit is not None:
        check_upscale(shown.width, shown.height, Layout(work.size, None, False, work.size,
                                                        (0, 0)), limit)  # an editor's box
    work.image = work.pyramid.scaled(work.region, *work.size)
    return work


def crop(work: Work) -> Work:
    """Attention-crop a covering image that was resized whole: needs the scaled pixels."""
    if work.smart_cut:
        work.image = ops.smart_crop(work.image, *work.plan.canvas)
        # smartcrop is a view into the covering image; its offset says where the window sits
        left, top = -work.image.xoffset, -work.image.yoffset
        work.lineage.shown = work.to_master(_base_window(_whole(work), work.plan, left, top))
    return work


def pad(work: Work) -> Work:
    """Centre on a background canvas: after scale, so the margin is exact and never resampled."""
    work.image = ops.pad(work.image, work.plan.canvas, work.plan.offset,
                         parse_colour(work.preset.background))
    return work


def encode(work: Work) -> Work:
    """Save, metadata stripped, quality searched ("auto"), under the byte budget: last."""
    # Last, as the search and the budget re-encode the finished pixels (the score's lossless
    # reference). What decided those pixels is their key: a JPEG and a WebP of them share one.
    pixels = None if work.scoring is None else (
        work.base_key, work.region, work.size, work.plan.canvas, work.plan.offset,
        work.smart_cut, work.preset.background, work.framing)
    work.data, work.quality, work.score = save(work.image, work.preset, work.scoring, pixels)
    work.encoder = describe_encoder(work.preset, work.quality)
    return work


Step = Callable[[Work], Work]

# The whole per-derivative pipeline, in order.
STEPS: list[Step] = [base, trim, layout, window, scale, crop, pad, encode]


def run(work: Work, steps: list[Step] = STEPS) -> Work:
    """Run the steps in order on one derivative's Work."""
    for step in steps:
        work = step(work)
    return work
