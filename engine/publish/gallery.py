"""The storefront's gallery export: products in catalog order with their images ready for
`<picture>`/`srcset`, their videos ready for `<video>`, and editorial sets on their own.

Built from the manifest only (its row order is catalog order) plus small reads of the rendered
files: a placeholder and dominant colour per image, and each video's codecs string.
"""

from __future__ import annotations

import base64
import json
import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from html import escape
from pathlib import Path

from ..rows import PUBLISHED, Row
from .feeds import VIDEO_FORMATS, file_url

LADDER = re.compile(r"^(?P<set>.+)-(?P<width>[0-9]+)-(?P<format>avif|webp|jpeg)$")
SET_OUTPUT = re.compile(r"^(?P<set>.+)-(?P<format>avif|webp|jpeg)$")
# A breakpoints set's files (preset key `breakpoints`, widths chosen per master by bytes): the
# channel output `<set>-<format>` makes `<set>-<format>-<width>`.
CHOSEN = re.compile(r"^(?P<set>.+)-(?P<format>avif|webp|jpeg)-(?P<width>[0-9]+)$")
BROWSER_ORDER = ("avif", "webp", "jpeg")  # what a browser should try first
# The manifest columns the gallery reads (api.gallery makes Rows of these only).
GALLERY_COLUMNS = ["master_id", "master_kind", "product", "position", "role", "title", "alt",
                   "channel", "output", "path", "format", "width", "height", "status",
                   "breakpoints", "video_codec"]
MIME = {"avif": "image/avif", "webp": "image/webp", "jpeg": "image/jpeg"}
# `src` (browsers without srcset, crawlers): a mid rendition, the widest JPEG up to this width;
# the largest would cost a phone megabytes it never asked for.
SRC_MAX_WIDTH = 1280
# The placeholder is an LQIP: a 16 px wide WebP of the image, about 100-300 bytes as a data URI,
# painted as the <img>'s background (the browser's smooth upscaling blurs it). Chosen over
# ThumbHash/BlurHash because every browser decodes it natively: no script on the page, so it
# shows before any JavaScript runs, and the storefront stays framework- and script-free.
PLACEHOLDER_WIDTH = 16
PLACEHOLDER_MAX = 1024
COLOUR_WIDTH = 48  # the dominant colour is counted over a thumbnail this wide
# The video per codec the page plays: the widest rendition up to this width (720p rung).
VIDEO_MAX_WIDTH = 1280
SIZES_MAIN = "(min-width: 1000px) 640px, 320px"
SIZES_MORE = "160px"
SIZES_EDITORIAL = "(min-width: 1000px) 960px, 100vw"  # section.editorial img in STYLE


def placeholder_and_colour(path: Path) -> tuple[str, str]:
    """(data URI under 1 KB, dominant colour #rrggbb) of an image file, read once (a 48 px
    thumbnail, shrunk on load: the colour's pixels, and the placeholder's source)."""
    import numpy as np
    import pyvips

    from ..image import ops

    image = pyvips.Image.thumbnail(str(path), COLOUR_WIDTH)
    image = ops.flatten(ops.to_srgb(image), (255, 255, 255)).copy_memory()  # read twice below
    small = image.thumbnail_image(PLACEHOLDER_WIDTH)
    data = b""
    for quality in (40, 20, 5):
        data = small.webpsave_buffer(Q=quality, keep="none")
        uri = "data:image/webp;base64," + base64.b64encode(data).decode()
        if len(uri) < PLACEHOLDER_MAX:
            break
    # Dominant colour: the most common of 4096 colour bins (4 bits per channel), averaged.
    pixels = np.frombuffer(image.write_to_memory(), dtype=np.uint8).reshape(-1, 3)
    bins = (pixels[:, 0] >> 4).astype(int) * 256 + (pixels[:, 1] >> 4) * 16 + (pixels[:, 2] >> 4)
    top = np.bincount(bins).argmax()
    r, g, b = pixels[bins == top].mean(axis=0).round().astype(int)
    return uri, f"#{r:02x}{g:02x}{b:02x}"


def codecs_type(path: Path, fmt: str) -> str:
    """The <source type> with its codecs parameter, read from the file (RFC 6381):
    `video/mp4; codecs="avc1.64001f, mp4a.40.2"`."""
    import av

    codecs = []
    with av.open(str(path)) as container:
        for stream in container.streams.video[:1]:
            ctx = stream.codec_context
            extra = ctx.extradata or b""
            if ctx.name == "h264" and len(extra) >= 4 and extra[0] == 1:  # avcC record
                codecs.append(f"avc1.{extra[1]:02x}{extra[2]:02x}{extra[3]:02x}")
            elif ctx.name in ("hevc", "h265"):
                codecs.append("hvc1")
            else:
                codecs.append({"vp9": "vp09.00.10.08", "vp8": "vp8", "av1": "av01.0.08M.08"}
                              .get(ctx.name, ctx.name))
        for stream in container.streams.audio[:1]:
            ctx = stream.codec_context
            if ctx.name == "aac":
                codecs.append("mp4a.40.5" if "HE" in (ctx.profile or "") else "mp4a.40.2")
            else:
                codecs.append(ctx.name)
    return f'video/{fmt}; codecs="{", ".join(codecs)}"'


def _srcset(base: str, renditions: list[Row]) -> str:
    return ", ".join(f"{file_url(base, r.path)} {r.width}w" for r in renditions)


def _ladder(rows: list[Row]) -> dict[str, list[Row]]:
    """format -> renditions by width, one per distinct width (a `limit` ladder repeats the
    master's own width past it)."""
    by_format: dict[str, dict[int, Row]] = defaultdict(dict)
    for r in sorted(rows, key=lambda r: (r.width or 0, r.output or "")):
        match = LADDER.match(r.output or "") or (
            CHOSEN.match(r.output or "") if r.breakpoints else None)
        if match and r.width:
            by_format[match["format"]].setdefault(r.width, r)
    return {f: list(by_format[f].values()) for f in BROWSER_ORDER if by_format.get(f)}


def _image(out: Path, base: str, rows: list[Row]) -> dict | None:
    ladder = _ladder(rows)
    if "jpeg" not in ladder:
        return None
    first = rows[0]
    jpegs = ladder["jpeg"]
    largest = max((r for rs in ladder.values() for r in rs), key=lambda r: r.width or 0)
    mid = [r for r in jpegs if (r.width or 0) <= SRC_MAX_WIDTH] or jpegs[:1]
    placeholder, colour = placeholder_and_colour(out / jpegs[0].path)
    return {
        "master_id": first.master_id, "position": first.position or 0,
        "alt": first.alt or "", "title": first.title,
        "width": largest.width, "height": largest.height,
        "placeholder": placeholder, "color": colour,
        "sources": [{"type": MIME[f], "srcset": _srcset(base, ladder[f])}
                    for f in ladder if f != "jpeg"],
        "srcset": _srcset(base, jpegs),  # the <img>'s own JPEG srcset
        "src": file_url(base, mid[-1].path),
    }


HLS_MIME = "application/vnd.apple.mpegurl"


def _video(out: Path, base: str, rows: list[Row]) -> dict | None:
    videos = [r for r in rows if r.format in VIDEO_FORMATS and r.width]
    if not videos:
        return None
    by_codec: dict[str, list[Row]] = defaultdict(list)
    for r in videos:
        by_codec[r.video_codec or r.format].append(r)
    sources = []
    for group in by_codec.values():
        fit = [r for r in group if r.width <= VIDEO_MAX_WIDTH] or group
        pick = max(fit, key=lambda r: (r.width, r.output or ""))
        sources.append({"type": codecs_type(out / pick.path, pick.format),
                        "src": file_url(base, pick.path), "width": pick.width,
                        "height": pick.height})
    posters = [r for r in rows if r.format not in VIDEO_FORMATS and r.width]
    poster = max(posters, key=lambda r: r.width) if posters else None
    widest = max(sources, key=lambda s: s["width"])
    # An HLS set (a ladder with hls = true): its master playlist goes first, for players that
    # stream it (Safari natively, others through a player library); the files follow.
    hls = next((r for r in rows if r.format == "m3u8" and r.path
                and r.path.endswith("/master.m3u8")), None)
    if hls is not None:
        sources.insert(0, {"type": HLS_MIME, "src": file_url(base, hls.path),
                           "width": widest["width"], "height": widest["height"]})
    return {"master_id": rows[0].master_id, "position": rows[0].position or 0,
            "alt": rows[0].alt or "", "width": widest["width"], "height": widest["height"],
            "sources": sources, "poster": file_url(base, poster.path) if poster else None}


def _editorial(base: str, rows: list[Row]) -> dict:
    sets: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(rows, key=lambda r: r.width or 0):
        match = SET_OUTPUT.match(r.output or "") or (
            CHOSEN.match(r.output or "") if r.breakpoints else None)
        if match:
            sets[match["set"]][match["format"]].append(r)
    out_sets = []
    for name, by_format in sets.items():
        fallbacks = by_format.get("jpeg") or next(iter(by_format.values()))
        fallback = ([r for r in fallbacks if (r.width or 0) <= SRC_MAX_WIDTH] or fallbacks)[-1]
        widest = fallbacks[-1]
        out_sets.append({
            "name": name, "width": widest.width, "height": widest.height,
            "sources": [{"type": MIME[f], "srcset": _srcset(base, by_format[f])}
                        for f in BROWSER_ORDER
                        if f in by_format and by_format[f] is not fallbacks],
            "srcset": _srcset(base, fallbacks), "src": file_url(base, fallback.path),
        })
    first = rows[0]
    return {"master_id": first.master_id, "alt": first.alt or "", "title": first.title,
            "sets": out_sets}


def gallery(rows: list[Row], out: Path, base: str, channel: str = "web",
            video_channel: str = "mobile") -> dict:
    """The gallery document (see the module doc) of rows in memory; `base` is an http(s) URL
    or a relative prefix (".") for a page inside OUT. A manifest's gallery is built a product
    at a time instead (api.gallery: stream_products, json_chunks, html_chunks)."""
    gather = Gather(channel, video_channel)
    for r in rows:
        gather.add(r)
    return {"products": [entry for product, masters in gather.products.items()
                         if (entry := product_entry(product, masters, out, base))],
            "editorial": gather.editorial_entries(base)}


class Gather:
    """Rows routed to where the gallery uses them: a product's masters (its images from
    `channel`, its videos from `video_channel`), editorial sets (from `channel`) apart.
    Products keep the order of their first served row (the manifest's, i.e. the catalog's)."""

    def __init__(self, channel: str, video_channel: str) -> None:
        self.channel, self.video_channel = channel, video_channel
        self.products: dict[str, dict[str, list[Row]]] = {}  # product -> master -> rows
        self.editorial: dict[str, list[Row]] = {}

    def add(self, r: Row) -> None:
        if r.status not in PUBLISHED or not r.path:
            return
        if (r.role or "product") == "editorial":
            if r.channel == self.channel:
                self.editorial.setdefault(r.master_id, []).append(r)
            return
        if r.product is None:
            return
        masters = self.products.setdefault(r.product, {})
        if r.master_kind == "video":
            if r.channel == self.video_channel:
                masters.setdefault(r.master_id, []).append(r)
        elif r.channel == self.channel:
            masters.setdefault(r.master_id, []).append(r)

    def take(self, product: str) -> dict[str, list[Row]]:
        """The product's masters' rows, no longer held here."""
        return self.products.pop(product)

    def editorial_entries(self, base: str) -> list[dict]:
        return [_editorial(base, rs) for rs in self.editorial.values()]


def product_entry(product: str, masters: dict[str, list[Row]], out: Path, base: str,
                  ) -> dict | None:
    """A product's entry: its images and videos in position order (None without either)."""
    ordered = sorted(masters.values(), key=lambda rs: (rs[0].position or 0, rs[0].master_id))
    images = [i for rs in ordered if rs[0].master_kind != "video" if (i := _image(out, base, rs))]
    videos = [v for rs in ordered if rs[0].master_kind == "video" if (v := _video(out, base, rs))]
    if not (images or videos):
        return None
    return {"id": product, "title": next((rs[0].title for rs in ordered if rs[0].title), None),
            "images": images, "videos": videos}


def stream_products(batches: Iterable[tuple[int, list[Row]]], order: list[str],
                    last: dict[str, int], gather: Gather, out: Path, base: str,
                    workers: int = 1) -> Iterator[dict]:
    """Each product's entry as soon as its last row has been read, in `order`, holding only
    the rows of products not yet complete (a catalog lists a product's masters together, so
    few). `batches`: (the manifest row number after the batch, its rows); `order` and `last`:
    each product's first-row order and last row number, from a pass over a few columns.
    A product that pass did not see (the manifest replaced in between) comes at the end.
    Entries are made on `workers` threads (each image's placeholder reads a file: ~4 ms),
    at most 4 x workers at a time, and come out in order."""
    window = 4 * workers
    with ThreadPoolExecutor(workers) as pool:
        made: deque[Future] = deque()

        def make(product: str) -> None:
            made.append(pool.submit(product_entry, product, gather.take(product), out, base))

        def finished(keep: int) -> Iterator[dict]:
            while len(made) > keep:
                if entry := made.popleft().result():
                    yield entry

        ready = 0
        for end, rows in batches:
            for r in rows:
                gather.add(r)
            while ready < len(order) and last[order[ready]] < end:
                if order[ready] in gather.products:
                    make(order[ready])
                ready += 1
            yield from finished(window)
        for product in list(gather.products):
            make(product)
        yield from finished(0)


def json_chunks(products: Iterable[dict], editorial: Callable[[], list[dict]]) -> Iterator[str]:
    """json.dumps({"products": [...], "editorial": [...]}, indent=1, ensure_ascii=False) + "\n",
    a product at a time (`editorial` is called after the last product)."""
    yield '{\n "products": ['
    first = True
    for product in products:
        text = json.dumps(product, indent=1, ensure_ascii=False).replace("\n", "\n  ")
        yield ("\n  " if first else ",\n  ") + text
        first = False
    yield ("]" if first else "\n ]") + ',\n "editorial": '
    yield json.dumps(editorial(), indent=1, ensure_ascii=False).replace("\n", "\n ") + "\n}\n"


STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fff}
header{padding:14px 16px;border-bottom:1px solid #e5e5e5}h1{font-size:20px;margin:0}
main{padding:0 16px}section.product{padding:24px 0;border-bottom:1px solid #eee}
h2{font-size:18px;margin:0 0 12px}.gallery{display:flex;flex-wrap:wrap;gap:12px;
align-items:flex-start}.gallery picture{display:block}
.gallery img{display:block;height:auto;background-size:cover;background-position:center}
.main img{width:320px}.more img{width:160px}
@media (min-width:1000px){.main img{width:640px}}
.more{display:flex;flex-wrap:wrap;gap:8px;width:336px}
video{display:block;width:320px;height:auto}
section.editorial img{display:block;width:100%;max-width:960px;height:auto}
"""


def _picture(image: dict, main: bool, eager: bool = False) -> str:
    """One <picture>; `eager`: the page's first main image (its LCP), fetched at once with high
    priority; every other image is lazy."""
    sizes = SIZES_MAIN if main else SIZES_MORE
    sources = "".join(f'<source type="{s["type"]}" srcset="{escape(s["srcset"])}" '
                      f'sizes="{sizes}">' for s in image["sources"])
    loading = 'fetchpriority="high"' if eager else 'loading="lazy"'
    style = (f"background-color:{image['color']};"
             f"background-image:url({image['placeholder']})")
    return (f'<picture data-master="{escape(image["master_id"])}" '
            f'data-position="{image["position"]}">{sources}'
            f'<img src="{escape(image["src"])}" srcset="{escape(image["srcset"])}" '
            f'sizes="{sizes}" width="{image["width"]}" height="{image["height"]}" '
            f'alt="{escape(image["alt"])}" {loading} decoding="async" '
            f'style="{escape(style)}"></picture>')


def _video_html(video: dict) -> str:
    sources = "".join(f'<source type="{escape(s["type"])}" src="{escape(s["src"])}">'
                      for s in video["sources"])
    poster = f' poster="{escape(video["poster"])}"' if video["poster"] else ""
    return (f'<video controls muted playsinline preload="none" width="{video["width"]}" '
            f'height="{video["height"]}"{poster}>{sources}</video>')


def html_chunks(products: Iterable[dict], editorial: Callable[[], list[dict]],
                title: str = "Storefront") -> Iterator[str]:
    """A self-contained page (inline CSS, no script, no network): one <picture> per image, a
    product at a time (`editorial` is called after the last product).
    Sizes are fixed per breakpoint (main 320/640 CSS px, others 160) so `sizes` is exact and
    the browser picks the smallest rendition >= CSS width x DPR; width/height on every <img>
    reserve its box (no layout shift). On a one-product page, its main image is the eager one."""
    yield (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width,initial-scale=1">'
           f'<title>{escape(title)}</title><link rel="icon" href="data:,">'
           f"<style>{STYLE}</style></head><body><header><h1>{escape(title)}</h1></header>"
           f"<main>")
    for n, product in enumerate(products):
        images = product["images"]
        head = _picture(images[0], main=True, eager=n == 0) if images else ""
        more = "".join(_picture(i, main=False) for i in images[1:])
        videos = "".join(_video_html(v) for v in product["videos"])
        name = product.get("title") or product["id"]
        yield (f'<section class="product" id="product-{escape(product["id"])}">'
               f"<h2>{escape(name)}</h2><div class=\"gallery\"><div class=\"main\">{head}</div>"
               f'<div class="more">{more}</div>{videos}</div></section>')
    for item in editorial():
        pictures = []
        for s in item["sets"]:
            sources = "".join(f'<source type="{x["type"]}" srcset="{escape(x["srcset"])}" '
                              f'sizes="{SIZES_EDITORIAL}">' for x in s["sources"])
            pictures.append(f'<picture data-set="{escape(s["name"])}">{sources}<img '
                            f'srcset="{escape(s["srcset"])}" sizes="{SIZES_EDITORIAL}" '
                            f'src="{escape(s["src"])}" width="{s["width"]}" '
                            f'height="{s["height"]}" alt="{escape(item["alt"])}" '
                            f'loading="lazy" decoding="async"></picture>')
        yield (f'<section class="editorial"><h2>{escape(item["title"] or item["master_id"])}'
               f'</h2>{"".join(pictures)}</section>')
    yield "</main></body></html>\n"
