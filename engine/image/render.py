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
from ..geometry import Box, Framing
from ..spec.models import ImagePreset
from . import decode as dec
from . import pipeline
from .pipeline import BaseKey, Lineage, Pyramid

__all__ = ["ENGINE_ID", "MasterRenderer", "Pyramid", "Rendered", "decode_for", "from_image",
           "render_all", "render_decoded"]

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


class MasterRenderer:
    """Everything one master's derivatives share: the decoded image, bases, trim boxes."""

    def __init__(self, decoded: dec.Decoded) -> None:
        self.decoded = decoded
        self._pyramids: dict[BaseKey, Pyramid] = {}
        self._trims: dict[tuple[BaseKey, float], Box | None] = {}

    def render(self, preset: ImagePreset, framing: Framing | None = None) -> Rendered:
        """One derivative: pipeline.STEPS in order, on this master's shared caches."""
        start = time.perf_counter()
        work = pipeline.run(pipeline.Work(preset, self.decoded, self._pyramids, self._trims,
                                          framing=framing))
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
        )


def decode_for(data: bytes, presets: list[ImagePreset], max_pixels: int,
               framings: list[Framing | None] | None = None) -> dec.Decoded:
    """Probe, then decode once at the largest size any of `presets` needs (an editor's crop
    box needs its own pixels at the output's size: `framings`, one per preset)."""
    header = dec.probe(data, max_pixels)
    scale = max(
        (pipeline.needed_scale(header.width, header.height, p, f)
         for p, f in zip(presets, framings or [None] * len(presets), strict=True)),
        default=1.0,
    )
    return dec.decode(data, header, scale)


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
    """Each recipe from one decoded master; a recipe that fails gets its MasterError."""
    renderer = MasterRenderer(decoded)
    order = sorted(
        presets.items(),
        key=lambda kv: -(kv[1].resize.width or 0) * (kv[1].resize.height or kv[1].resize.width or 0),
    )
    results: dict[str, Rendered | MasterError] = {}
    for recipe, preset in order:
        try:
            results[recipe] = renderer.render(preset, (framings or {}).get(recipe))
        except MasterError as exc:
            results[recipe] = exc
        except pyvips.Error as exc:
            results[recipe] = MasterError(f"render failed: {dec.vips_message(exc)}")
    return results
