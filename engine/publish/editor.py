"""The editor's loop in the report: per master, a thumbnail of the master with every output's
crop region drawn on it, where an editor clicks a focal point or drags a crop box (for an
aspect ratio, or for one channel/output), then saves the catalog's complete crops sidecar.

Thumbnails are made at report time from the master the manifest names, decoded the way a render
decodes it (the same loader allow-list and pixel limit, upright, sRGB), downsized and embedded
as data URIs: the report stays one self-contained file. A master that cannot be read gets a note,
never a failed report. The page embeds the current sidecar, parsed, and writes it back whole
(other masters' entries untouched) as a download named as the sidecar must be named: the
browser cannot write next to the catalog, and a download keeps the editor in charge of when the
next render sees it.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from ..catalog import load_catalog, read_crops
from ..geometry import aspect_matches
from ..masters import open_master, read_master
from ..rows import Row
from ..spec.models import Preset, VideoPreset
from .editor_page import SCRIPT, STYLE
from .feeds import VIDEO_FORMATS

__all__ = ["SCRIPT", "STYLE", "Sidecar", "editor_html", "editor_json", "master_data",
           "master_thumbnail", "read_sidecar", "save_bar"]

# Long side of a master's thumbnail: enough to place a box within a few master pixels on a
# typical 2000-4000 px master; a WebP at q70 of that size is 10-40 KB as a data URI, so a
# report of a few hundred masters stays a page a browser opens at once.
THUMB_SIDE = 480
THUMB_QUALITY = 70
# An aspect key is written as whole numbers ("16:9", "4:5") when both are at most this;
# otherwise as a decimal ratio ("1.91:1"), which matches within the plan's 1%.
MAX_ASPECT_TERM = 32


@dataclass(frozen=True)
class Thumb:
    """A master's thumbnail (data URI) and its upright size in master pixels; or why not."""

    uri: str | None = None
    width: int | None = None
    height: int | None = None
    note: str | None = None


@dataclass
class Sidecar:
    """The catalog's crops file as the report found it: where it lives (None when the report
    was made without --catalog), its tables, and each master's focal point from the catalog's
    columns (what a sidecar focus overrides)."""

    location: str | None = None
    catalog: str | None = None
    tables: dict = field(default_factory=dict)
    focus: dict[str, tuple[float, float]] = field(default_factory=dict)


def read_sidecar(catalog: str | Path | None, exclude: Path | None = None) -> Sidecar:
    """The sidecar of `catalog` (a listing or a folder; `exclude`: OUT, when it lies inside a
    folder catalog); ConfigError when the catalog or its sidecar cannot be read: saving over a
    sidecar the page could not show would lose it."""
    if catalog is None:
        return Sidecar()
    location, tables = read_crops(catalog)
    masters = load_catalog(catalog, exclude=exclude)
    focus = {m.id: m.focus for m in masters if m.focus is not None}
    where = str(catalog) if "://" in str(catalog) else str(Path(catalog).resolve())
    return Sidecar(location=location, catalog=where, tables=tables or {}, focus=focus)


def master_thumbnail(path: str | None, kind: str | None) -> Thumb:
    """The master's thumbnail, or a note saying why there is none (never raises)."""
    if not path:
        return Thumb(note="no master file recorded")
    try:
        return _video_thumb(path) if kind == "video" else _image_thumb(path)
    except Exception as exc:  # whatever the master holds: a note on the page, not a failure
        return Thumb(note=f"cannot show the master: {exc}")


def _webp_uri(image: object) -> str:
    data = image.webpsave_buffer(Q=THUMB_QUALITY, keep="none")  # type: ignore[attr-defined]
    return "data:image/webp;base64," + base64.b64encode(data).decode()


def _image_thumb(path: str) -> Thumb:
    from ..image import decode

    decode.configure()  # libvips' block on loaders not meant for untrusted data
    data = read_master(path)
    header = decode.probe(data)
    scale = min(1.0, THUMB_SIDE / max(header.width, header.height))
    image = decode.decode(data, header, scale).image
    image = image.resize(min(1.0, THUMB_SIDE / max(image.width, image.height)))
    return Thumb(_webp_uri(image), header.width, header.height)


def _video_thumb(path: str) -> Thumb:
    import pyvips

    from ..video import probe
    from ..video.filters import frame_rotation

    with open_master(path) as fh, probe.open_master(fh) as container:
        probe.describe_source(container)  # the frame size and duration limits
        frame = next(container.decode(video=0))
        rotation = frame_rotation(frame) % 360
        width, height = frame.width, frame.height
        factor = min(1.0, THUMB_SIDE / max(width, height))
        small = frame.reformat(width=max(2, round(width * factor)),
                               height=max(2, round(height * factor)), format="rgb24")
        array = small.to_ndarray()
    image = pyvips.Image.new_from_memory(array.tobytes(), array.shape[1], array.shape[0], 3,
                                         "uchar")
    turn = {90: "d270", 180: "d180", 270: "d90"}.get(rotation)
    if turn is not None:
        image = image.rot(turn)
    if rotation in (90, 270):
        width, height = height, width
    return Thumb(_webp_uri(image.copy(interpretation="srgb")), width, height)


def aspect_name(width: int, height: int) -> str:
    """The crops-file key of an output's aspect: "16:9", "4:5", or "1.91:1"."""
    g = math.gcd(width, height)
    if max(width, height) // g <= MAX_ASPECT_TERM:
        return f"{width // g}:{height // g}"
    return f"{width / height:.3f}".rstrip("0").rstrip(".") + ":1"


def _target(row: Row, preset: Preset | None) -> dict:
    """One output of a master as the page needs it: its size, whether an editor's focal point
    or box reaches it (the plan's rules: fill outputs; boxes for images only), its region."""
    resize = getattr(preset, "resize", None)
    video = isinstance(preset, VideoPreset) or row.format in VIDEO_FORMATS + ("m3u8", "m4s")
    if resize is not None and resize.width and resize.height:
        fill, size = resize.fit == "fill", (resize.width, resize.height)
    else:
        fill, size = row.crop_by is not None, (row.width, row.height)
    region = ([row.region_x, row.region_y, row.region_w, row.region_h]
              if None not in (row.region_x, row.region_y, row.region_w, row.region_h) else None)
    return {"key": f"{row.channel}/{row.output}", "w": size[0], "h": size[1],
            "aspect": aspect_name(size[0], size[1]) if size[0] and size[1] else None,
            "fill": bool(fill and size[0] and size[1]),
            "boxable": bool(fill and size[0] and size[1] and not video),
            "region": region, "crop_by": row.crop_by, "status": row.status}


def _aspects(targets: list[dict], keys: Iterable[str]) -> list[dict]:
    """The aspect ratios an editor can box: each boxable output's (outputs within the plan's 1%
    of one another share one), then any aspect key already in the sidecar."""
    found: list[dict] = []
    for t in targets:
        if t["boxable"] and not any(aspect_matches(a["ratio"], t["w"], t["h"]) for a in found):
            found.append({"key": aspect_name(t["w"], t["h"]), "ratio": t["w"] / t["h"]})
    for key in keys:
        parts = key.split(":")
        try:
            ratio = float(parts[0]) / float(parts[1])
        except (ValueError, IndexError, ZeroDivisionError):
            continue
        if len(parts) == 2 and ratio > 0 and key not in {a["key"] for a in found}:
            found.append({"key": key, "ratio": ratio})
    for a in found:
        a["members"] = [t["key"] for t in targets
                        if t["boxable"] and aspect_matches(a["ratio"], t["w"], t["h"])]
    return found


def master_data(master_id: str, rows: list[Row], thumb: Thumb, sidecar: Sidecar,
                presets: dict[str, Preset]) -> dict:
    targets = [_target(r, presets.get(r.preset or "")) for r in rows if r.channel]
    entry = sidecar.tables.get(master_id)
    keys = [k for k in entry if isinstance(k, str) and ":" in k] if isinstance(entry, dict) else []
    width = thumb.width or next((r.source_width for r in rows if r.source_width), None)
    height = thumb.height or next((r.source_height for r in rows if r.source_height), None)
    focus = sidecar.focus.get(master_id)
    rendered = {(r.source_width, r.source_height) for r in rows if r.source_width}
    return {"id": master_id, "w": width, "h": height, "kind": rows[0].master_kind,
            "changed": bool(rendered - {(width, height)}),
            "column_focus": list(focus) if focus and not (
                isinstance(entry, dict) and "focus" in entry) else None,
            "targets": targets, "aspects": _aspects(targets, keys)}


def editor_html(master_id: str, thumb: Thumb) -> str:
    """The master's editor: the thumbnail under an SVG in master pixels (the script draws the
    regions and the editor's choices on it and builds the tools), or the note."""
    if thumb.uri is None or not thumb.width or not thumb.height:
        return (f'<div class="editor" data-master="{escape(master_id)}"><p class="note">'
                f"{escape(thumb.note or 'no thumbnail')}</p></div>")
    factor = min(1.0, THUMB_SIDE / max(thumb.width, thumb.height))
    shown = max(1, round(thumb.width * factor))
    return (f'<div class="editor" data-master="{escape(master_id)}"><div class="stage" '
            f'style="width:{shown}px"><img class="thumb" src="{thumb.uri}" alt="master '
            f'{escape(master_id)}"><svg viewBox="0 0 {thumb.width} {thumb.height}" '
            f'preserveAspectRatio="none"></svg></div><div class="tools"></div></div>')


def page_data(masters: list[dict], sidecar: Sidecar) -> str:
    """The JSON the script starts from, safe inside <script>: the sidecar as ordered pairs
    (master ids like "123" would be reordered as a JavaScript object's keys)."""
    name = Path(sidecar.location.split("?")[0]).name if sidecar.location else "crops.toml"
    tables = [[k, list(v.items()) if isinstance(v, dict) else v]
              for k, v in sidecar.tables.items()]
    doc = {"file_name": name, "location": sidecar.location, "catalog": sidecar.catalog,
           "sidecar": tables, "masters": masters}
    text = json.dumps(doc, ensure_ascii=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def save_bar(sidecar: Sidecar) -> str:
    """Where the saved file goes, said on the page next to the button."""
    if sidecar.location is None:
        where = ("This report was made without <code>--catalog</code>, so it did not read an "
                 "existing crops file: the download holds only the choices made on this page. "
                 "Name it <code>&lt;listing stem&gt;.crops.toml</code> beside a listing, or "
                 "<code>&lt;folder&gt;.crops.toml</code> beside a catalog folder; "
                 "<code>fanout report OUT --catalog CATALOG</code> starts from the existing "
                 "file and names it.")
    else:
        name = Path(sidecar.location).name
        where = (f"Downloads <code>{escape(name)}</code>, the whole crops file (the entries of "
                 f"masters not edited here are kept; comments are not). Put it at <code>"
                 f"{escape(sidecar.location)}</code>, beside the catalog <code>"
                 f"{escape(sidecar.catalog or '')}</code>, replacing the file there; the next "
                 "<code>fanout render</code> re-renders exactly the outputs whose framing "
                 "changed.")
    return (f'<div id="crops-bar"><button id="save-crops" type="button">Save crops</button> '
            f'<span><b id="crops-changes">0</b> changes</span> <span id="crops-where">{where}'
            f'</span><details><summary>the file</summary><pre id="crops-preview"></pre>'
            f"</details></div>")


def editor_json(masters: list[dict], sidecar: Sidecar) -> str:
    return f'<script type="application/json" id="editor-data">{page_data(masters, sidecar)}</script>'
