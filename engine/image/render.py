"""Walk one image master: decode once, then make every distinct recipe from the decoded pixels.

Each derivative runs pipeline.STEPS: the per-derivative order is that one list, in pipeline.py.
What a master's derivatives share lives here, in MasterRenderer: the decoded image, a base and
its Pyramid per background, the trim boxes. Largest outputs go first so their intermediates can
serve the smaller ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyvips

from ..errors import MasterError
from ..geometry import Box, Framing, layout
from ..spec.models import ImagePreset, parse_colour
from . import breakpoints, ops, pipeline
from . import decode as dec
from .encode import Scoring
from .pipeline import BaseKey, Lineage, Pyramid

__all__ = ["ENGINE_ID", "MasterRenderer", "Pyramid", "Rendered", "decode_for", "from_image",
           "render_all", "render_decoded", "vector_scale"]

ENGINE_ID = f"fanout-image-1/libvips-{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"


@dataclass(frozen=True)
class Rendered:
    data: bytes
    format: str
    width: int
    height: int
    quality: int | None
    render_ms: float
    lineage: Lineage | None = None  # what the pipeline decided (trim, region shown, scale, crop)
    source: tuple[int, int] | None = None  # the master's oriented size
    encoder: str | None = None  # the saver and its options
    score: float | None = None  # SSIMULACRA2 of the file against its unencoded pixels ("auto")
    breakpoints: tuple[int, ...] | None = None  # a breakpoints set: the widths chosen (chosen
    # files only; see breakpoints.py)


class MasterRenderer:
    """Everything one master's derivatives share: the decoded image, bases, trim boxes."""

    def __init__(self, decoded: dec.Decoded) -> None:
        self.decoded = decoded
        self._pyramids: dict[BaseKey, Pyramid] = {}
        self._trims: dict[tuple[BaseKey, float], Box | None] = {}
        self._scoring = Scoring()  # quality = "auto": references and hints shared

    def render(self, preset: ImagePreset, framing: Framing | None = None) -> Rendered:
        """One derivative: pipeline.STEPS in order, on this master's shared caches."""
        start = time.perf_counter()
        work = pipeline.run(pipeline.Work(preset, self.decoded, self._pyramids, self._trims,
                                          framing=framing, scoring=self._scoring))
        return Rendered(
            data=work.data,
            format=preset.format,
            width=work.image.width,
            height=work.image.height,
            quality=work.quality if preset.format != "png" else None,
            render_ms=(time.perf_counter() - start) * 1000,
            lineage=work.lineage,
            source=(self.decoded.width, self.decoded.height),
            encoder=work.encoder,
            score=None if work.score is None else round(work.score, 3),
        )


def decode_for(data: bytes, presets: list[ImagePreset], max_pixels: int,
               framings: list[Framing | None] | None = None) -> dec.Decoded:
    """Probe, then decode once at the largest size any of `presets` needs (an editor's crop
    box needs its own pixels at the output's size: `framings`, one per preset)."""
    header = dec.probe(data, max_pixels)
    if header.vector is not None:  # an SVG: drawn at the size the largest output needs
        return dec.decode(data, header, vector_draw_scale(data, header, presets))
    scale = max(
        (pipeline.needed_scale(header.width, header.height, p, f)
         for p, f in zip(presets, framings or [None] * len(presets), strict=True)),
        default=1.0,
    )
    return dec.decode(data, header, scale, once=len(presets) == 1 and reads_once(presets[0]))


def reads_once(preset: ImagePreset) -> bool:
    """Whether one derivative of `preset` reads the decoded master once, in order: not a trim
    (it scans the image, then cuts from it), an attention crop (it analyses a shrunk copy
    first), a breakpoints set (it renders several candidates), nor a quality search or a byte
    budget (they encode again what may be the master itself, when no resize comes between)."""
    return (preset.trim is None and preset.breakpoints is None
            and preset.resize.gravity != "attention" and not preset.auto
            and preset.max_bytes is None)


def vector_draw_scale(data: bytes, header: dec.Header, presets: list[ImagePreset]) -> float:
    """The scale an SVG is drawn at: the largest any preset needs. A trimmed preset sizes the
    content inside the margin, so its box is found first on a small drawing (the size trim
    itself searches at) and the drawing made large enough for that box, with TRIM_MARGIN for
    the box found again on the large drawing (within the pixel limit)."""
    assert header.vector is not None
    width, height = header.vector.width, header.vector.height
    scale = max((vector_scale(width, height, p) for p in presets), default=1.0)
    trimmed = [p for p in presets if p.trim is not None]
    if not trimmed:
        return scale
    small = dec.decode(data, header, ops.TRIM_DETECT_SIZE / max(width, height)).image
    within_limit = (header.max_pixels / (width * height)) ** 0.5
    for preset in trimmed:
        base = small
        if base.hasalpha() and not preset.has_alpha_output:
            base = ops.flatten(base, parse_colour(preset.background))
        box = ops.trim_box(base, preset.trim.threshold)
        if box is not None:
            content_w = box.width * width / small.width
            content_h = box.height * height / small.height
            wanted = vector_scale(content_w, content_h, preset) * TRIM_MARGIN
            scale = max(scale, min(wanted, within_limit))
    return scale


# The content box found on the large drawing may come out a little smaller than on the small
# one; 5% more pixels keeps the trimmed content from being enlarged (upscale = "never").
TRIM_MARGIN = 1.05


def vector_scale(width: float, height: float, preset: ImagePreset) -> float:
    """The scale a vector master is drawn at for `preset`: its layout's, uncapped (a 100 px logo
    is drawn at 2000 px for a 2000 px output). A vector has no native resolution, so `limit`
    (never larger than the master) lays out as `fit`: every output gets its own size, whatever
    else the master's channels ask for. Editors' crop boxes are not applied to SVG masters'
    draw size."""
    resize = preset.resize
    if resize.fit == "limit":
        resize = resize.model_copy(update={"fit": "fit"})
    plan = layout(max(1, round(width)), max(1, round(height)), resize)
    return max(plan.scaled[0] / width, plan.scaled[1] / height)


def render_all(
    data: bytes, presets: dict[str, ImagePreset], max_pixels: int = dec.DEFAULT_MAX_PIXELS,
    framings: dict[str, Framing] | None = None,
) -> tuple[dict[str, Rendered | MasterError], float]:
    """Render each distinct recipe (keyed by recipe hash) of one master.

    Largest outputs go first so their in-memory intermediates can serve the smaller ones.
    Returns per-recipe results (a MasterError for a recipe that failed alone) and decode ms.
    Raises MasterError when the master itself cannot be decoded. `framings`: the editor's focal
    point / crop box of a recipe (by hash), for fill outputs.
    """
    start = time.perf_counter()
    framings = framings or {}
    decoded = decode_for(data, list(presets.values()), max_pixels,
                         [framings.get(h) for h in presets])
    decode_ms = (time.perf_counter() - start) * 1000
    return render_decoded(decoded, presets, framings), decode_ms


def from_image(image: pyvips.Image) -> dec.Decoded:
    """An upright 8-bit sRGB image already in memory (a video still) as a decoded master."""
    return dec.Decoded(image=image, width=image.width, height=image.height, scale=1.0)


def render_decoded(
    decoded: dec.Decoded, presets: dict[str, ImagePreset],
    framings: dict[str, Framing] | None = None,
) -> dict[str, Rendered | MasterError]:
    """Each recipe from one decoded master; a recipe that fails gets its MasterError. The
    candidates of a breakpoints set are rendered only as far as breakpoints.choose needs."""
    renderer = MasterRenderer(decoded)

    def render(recipe: str) -> Rendered:
        try:
            return renderer.render(presets[recipe], (framings or {}).get(recipe))
        except pyvips.Error as exc:
            if decoded.streamed:  # it decodes here: its errors are the master's (render_all),
                # without the saver's echo of them (vips2png: unable to write to target ...)
                reason = "; ".join(part for part in dec.vips_message(exc).split("; ")
                                   if "unable to write to target" not in part)
                raise _Undecodable(f"cannot decode image: {reason}") from None
            raise MasterError(f"render failed: {dec.vips_message(exc)}") from None

    sets: dict[str, list[str]] = {}
    for recipe, preset in presets.items():
        if preset.breakpoint_set is not None:
            sets.setdefault(preset.breakpoint_set, []).append(recipe)
    results: dict[str, Rendered | MasterError] = {}
    for members in sets.values():
        first = presets[members[0]]
        assert first.breakpoints is not None and first.resize.width is not None
        results.update(breakpoints.choose(
            [(presets[r].resize.width or 0, r) for r in members], render, decoded.width,
            first.resize.fit == "limit" or first.upscale == "never", first.breakpoints))
    order = sorted(
        ((r, p) for r, p in presets.items() if r not in results),
        key=lambda kv: -(kv[1].resize.width or 0) * (kv[1].resize.height or kv[1].resize.width or 0),
    )
    for recipe, _ in order:
        try:
            results[recipe] = render(recipe)
        except _Undecodable:
            raise
        except MasterError as exc:
            results[recipe] = exc
    return results


class _Undecodable(MasterError):
    """A streamed master's pixels failed to decode: the master fails, not one recipe."""
