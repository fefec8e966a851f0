"""One horizontal bar chart, drawn with libvips (no plotting dependency): fanout's bars blue,
the peers' orange."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyvips


def bar_chart(bars: list[tuple[str, float]], title: str, target: Path,
              ours: Callable[[str], bool], shown: Callable[[float], str]) -> None:
    """`bars`: (label, value) from top to bottom; `ours(label)`: a bar of fanout's;
    `shown(value)`: the value as printed after its label."""
    width, row = 900, 30
    image = pyvips.Image.black(width, row * len(bars) + 50, bands=3) + 255
    scale = (width - 320) / max(v for _, v in bars)

    def label(canvas: pyvips.Image, text: str, x: int, y: int) -> pyvips.Image:
        mask = pyvips.Image.text(text, dpi=72)
        ink = mask.ifthenelse([0, 0, 0], [255, 255, 255], blend=True)
        return canvas.draw_image(ink, x, y)

    image = label(image, title, 5, 10)
    for i, (name, value) in enumerate(bars):
        y = 40 + i * row
        colour = [40, 110, 200] if ours(name) else [210, 120, 40]
        image = image.draw_rect(colour, 300, y, max(2, int(value * scale)), row - 8, fill=True)
        image = label(image, f"{name}  {shown(value)}", 5, y + 4)
    image.cast("uchar").pngsave(str(target))
