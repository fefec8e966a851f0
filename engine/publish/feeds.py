"""Marketplace feeds from the manifest: Google Merchant Center, Meta catalog, Amazon's naming.

Feeds point at the rendered files under a base URL. Every URL is checked: RFC 3986 characters
only (non-ASCII and spaces percent-encoded), at most 2000 characters, extension matching the
file's format. A product the feed cannot describe (no main image, a bad URL) is reported, never
silently dropped.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError
from ..formats import VIDEO_CONTAINERS, extension, outputs
from ..manifest import published_mask
from ..rows import PUBLISHED, Row

MAX_URL = 2000
MAX_ADDITIONAL = 10
URL_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")
# The formats each feed takes (of those fanout writes), best first among equal sizes.
FEED_FORMATS = {
    "google": outputs("jpeg", "webp", "png", "gif"),  # Merchant Center image formats
    "meta": outputs("jpeg", "png"),
}
VIDEO_FORMATS = VIDEO_CONTAINERS
# Google Merchant Center image requirements (support.google.com/merchants/answer/6324350,
# "image_link"): at least 100x100 pixels for non-apparel products, 250x250 for apparel.
GOOGLE_MIN_SIZE = {"default": 100, "apparel": 250}
# The Meta feed's one video per product, unless --video-channel/--video-output choose: the
# Instagram feed video (4:5, what a catalog ad shows), else the product's first MP4.
META_VIDEO = ("instagram", "feed-video")
TRUE_TEXT = ("1", "true", "yes", "y")
# Rows whose file is served: rendered now, unchanged, or kept (tonight's render failed, the last
# good file stays published).


@dataclass
class FeedItem:
    product: str
    image_link: str
    additional: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)


@dataclass
class Feed:
    items: list[FeedItem]
    problems: list[str]
    output: str  # which channel output the image links point at


def check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--base-url: expected an http(s) URL like https://cdn.example.com/img; "
                          f"found {base_url!r}")
    return base_url.rstrip("/")


def file_url(base_url: str, path: str) -> str:
    """The URL of OUT/path under base_url, percent-encoded per RFC 3986."""
    return f"{base_url}/{quote(path, safe='/-._~')}"


def url_problem(url: str, fmt: str) -> str | None:
    if len(url) > MAX_URL:
        return f"URL longer than {MAX_URL} characters ({len(url)})"
    if not URL_CHARS.match(url):
        return f"URL has characters outside RFC 3986: {url!r}"
    ext = extension(fmt)
    if not urlsplit(url).path.lower().endswith("." + ext):
        return f"URL's extension does not match its format {fmt}: {url!r}"
    return None


# The manifest columns a feed reads: what api.feed turns into Python rows (a fraction of a
# row's memory: a million products' rows fit in about a gigabyte).
FEED_COLUMNS = ["master_id", "product", "position", "role", "channel", "output", "path",
                "format", "width", "height", "status", "extra"]


def best_output(sizes: Iterable[tuple[str, str, int]], formats: tuple[str, ...]) -> str | None:
    """Of (output, format, pixels) facts, the output with the largest images; JPEG first among
    equals (every client reads it)."""
    best: dict[str, tuple[int, int]] = {}
    for output, fmt, pixels in sizes:
        if fmt in formats and pixels is not None:
            score = (pixels, -formats.index(fmt))
            best[output] = max(best.get(output, score), score)
    return max(best, key=lambda o: best[o]) if best else None


def _pick_output(rows: list[Row], formats: tuple[str, ...]) -> str | None:
    return best_output(((r.output, r.format, r.width * r.height) for r in rows), formats)


def is_product_image(row: Row, channel: str) -> bool:
    """A served file of `channel` from the product workflow: what a feed lists."""
    return (row.channel == channel and row.status in PUBLISHED
            and (row.role or "product") == "product")


def product_image_mask(table: pa.Table, channel: str) -> pa.ChunkedArray:
    """is_product_image over a batch of manifest rows (status, path, channel, role)."""
    return pc.and_(pc.and_(published_mask(table), pc.fill_null(
        pc.equal(table.column("channel"), channel), False)), pc.fill_null(
        pc.equal(pc.coalesce(table.column("role"), "product"), "product"), False))


def _is_apparel(row: Row, apparel: bool) -> bool:
    """--apparel, or the catalog's own `apparel` column (true/yes/1) for this master."""
    return apparel or str((row.extra or {}).get("apparel", "")).strip().lower() in TRUE_TEXT


def _size_problem(row: Row, apparel: bool) -> str | None:
    """Why Google refuses this image as too small, or None."""
    kind = "apparel" if _is_apparel(row, apparel) else "default"
    least = GOOGLE_MIN_SIZE[kind]
    if (row.width or 0) >= least and (row.height or 0) >= least:
        return None
    what = "apparel" if kind == "apparel" else "non-apparel"
    return (f"image {row.path} is {row.width}x{row.height}, under Google's minimum "
            f"{least}x{least} for {what} products; left out")


def _one_video(rows: list[Row], base_url: str, video_channel: str | None,
               video_output: str | None) -> dict[str, str]:
    """product -> the URL of its one feed video: the chosen channel/output, else META_VIDEO,
    else its first MP4 (by channel, output and master)."""
    videos = sorted((r for r in rows if r.status in PUBLISHED and r.path and r.product
                     and r.format in VIDEO_FORMATS),
                    key=lambda r: (r.channel or "", r.output or "", r.master_id))
    if video_channel or video_output:
        chosen = [r for r in videos if (video_channel is None or r.channel == video_channel)
                  and (video_output is None or r.output == video_output)]
        if not chosen:
            raise ConfigError(f"no rendered video in {video_channel or 'any channel'}/"
                              f"{video_output or 'any output'} of this manifest")
    else:
        chosen = ([r for r in videos if (r.channel, r.output) == META_VIDEO]
                  or [r for r in videos if r.format == "mp4"])
    picked: dict[str, str] = {}
    for r in chosen:
        picked.setdefault(r.product, file_url(base_url, r.path))
    return picked


def product_feed(
    rows: list[Row], channel: str, base_url: str, kind: str, output: str | None = None,
    *, video_channel: str | None = None, video_output: str | None = None,
    apparel: bool = False, products: Iterable[str | None] | None = None,
) -> Feed:
    """One item per product: its position-0 image and up to ten more, in position order.

    Google: images under its minimum size are left out and reported. Meta: at most one video
    per product (see _one_video). `products`: every product with an image in the channel,
    when `rows` hold only `output`'s (api.feed: the rest never become Python rows)."""
    base_url = check_base_url(base_url)
    formats = FEED_FORMATS[kind]
    mine = [r for r in rows if is_product_image(r, channel)]
    every_product = sorted(set(products) if products is not None else {r.product for r in mine})
    if not every_product:
        raise ConfigError(f"no rendered product images in channel {channel!r} of this manifest")
    output = output or _pick_output(mine, formats)
    chosen = [r for r in mine if r.output == output and r.format in formats]
    if not chosen:
        raise ConfigError(f"channel {channel!r} has no output {output!r} in a format "
                          f"{kind} accepts ({', '.join(formats)})")
    problems: list[str] = []
    by_product: dict[str, dict[int, str]] = defaultdict(dict)
    for r in sorted(chosen, key=lambda r: r.master_id):
        url = file_url(base_url, r.path)
        if kind == "google" and (problem := _size_problem(r, apparel)):
            problems.append(f"product {r.product}, master {r.master_id}: {problem}")
            continue
        if problem := url_problem(url, r.format):
            problems.append(f"product {r.product}, master {r.master_id}: {problem}")
            continue
        position = r.position or 0
        if position in by_product[r.product]:
            problems.append(f"product {r.product}: several images at position {position}; "
                            f"kept the first, left out master {r.master_id}")
            continue
        by_product[r.product][position] = url
    videos = _one_video(rows, base_url, video_channel, video_output) if kind == "meta" else {}
    items = []
    for product in every_product:
        images = by_product.get(product, {})
        if 0 not in images:
            problems.append(f"product {product}: no main image (position 0) in "
                            f"{channel}/{output}; left out of the feed")
            continue
        extra = [images[p] for p in sorted(images) if p != 0]
        if len(extra) > MAX_ADDITIONAL:
            problems.append(f"product {product}: {len(extra)} additional images, "
                            f"the feed takes the first {MAX_ADDITIONAL}")
        video = videos.get(product)
        items.append(FeedItem(product, images[0], extra[:MAX_ADDITIONAL],
                              [video] if video else []))
    return Feed(items, problems, output)


def google_tsv(feed: Feed) -> str:
    """Merchant Center supplemental feed: id, image_link, additional_image_link (comma list)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["id", "image_link", "additional_image_link"])
    for item in feed.items:
        writer.writerow([item.product, item.image_link, ",".join(item.additional)])
    return buffer.getvalue()


def meta_csv(feed: Feed) -> str:
    """Meta catalog: id, image_link, additional_image_link, and video[n].url where present."""
    n_videos = max((len(i.videos) for i in feed.items), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "image_link", "additional_image_link"]
                    + [f"video[{n}].url" for n in range(n_videos)])
    for item in feed.items:
        writer.writerow([item.product, item.image_link, ",".join(item.additional)]
                        + item.videos + [""] * (n_videos - len(item.videos)))
    return buffer.getvalue()


# The manifest columns amazon_package reads (api.amazon_export makes Rows of these only).
AMAZON_COLUMNS = ["master_id", "channel", "status", "master_kind", "path", "width", "height",
                  "bytes", "sha256"]
AMAZON_NAME = re.compile(r"^(?P<sku>.+)\.(?P<slot>MAIN|PT0[1-8]|SWCH)\.(?P<ext>[a-z]+)$")


def _refuse_clashes(entries: list[tuple]) -> None:
    """Two images under one file name (SKUs equal, or equal but for case: one name in a zip
    or on a case-insensitive disk) would overwrite each other: refuse before writing."""
    by_name: dict[str, list[tuple]] = defaultdict(list)
    for entry in entries:
        by_name[entry[0].casefold()].append(entry)
    for clash in by_name.values():
        masters = list(dict.fromkeys(e[4].master_id for e in clash))
        if len(masters) < 2:
            continue
        first, second = (next(e for e in clash if e[4].master_id == m) for m in masters[:2])
        if first[0] == second[0]:
            what = f"SKU {first[2]!r} names two images {first[0]!r}"
        else:
            what = (f"SKUs {first[2]!r} and {second[2]!r} name two images {first[0]!r} and "
                    f"{second[0]!r}, one file in a zip or on a case-insensitive disk")
        more = f" and {len(masters) - 2} more" if len(masters) > 2 else ""
        raise ConfigError(
            f"Amazon package: {what}, from masters {masters[0]!r} ({first[4]['path']}) and "
            f"{masters[1]!r} ({second[4]['path']}){more}; give each product its own SKU. "
            "Nothing written"
        )


def amazon_package(rows: list[Row], out: Path, target: Path, channel: str = "amazon") -> list[str]:
    """Amazon's files (SKU.MAIN.jpg, SKU.PT01.jpg ...) plus listing.csv, as a folder or a .zip.

    Returns the problems (files whose names do not follow the convention are left out). Product
    videos and their posters are uploaded through Amazon's video flow, not this package.
    """
    rows = [r for r in rows if r.channel == channel and r.status in PUBLISHED
            and r.master_kind != "video"]
    if not rows:
        raise ConfigError(f"no rendered images in channel {channel!r} of this manifest")
    problems, entries = [], []
    for r in sorted(rows, key=lambda r: r.path):
        name = Path(r.path).name
        match = AMAZON_NAME.match(name)
        if match is None:
            problems.append(f"{r.path}: not named SKU.MAIN / SKU.PT01..PT08; left out")
            continue
        entries.append((name, out / r.path, match["sku"], match["slot"], r))
    _refuse_clashes(entries)
    slots: dict[str, set[str]] = defaultdict(set)
    for _, _, sku, slot, _ in entries:
        slots[sku].add(slot)
    problems += [f"product {sku}: no MAIN image ({sku}.MAIN.*); Amazon needs one before the "
                 "others are shown" for sku in sorted(slots) if "MAIN" not in slots[sku]]
    listing = io.StringIO()
    writer = csv.writer(listing, lineterminator="\n")
    writer.writerow(["sku", "slot", "file", "width", "height", "bytes", "sha256"])
    for name, _, sku, slot, r in entries:
        writer.writerow([sku, slot, name, r.width, r.height, r.bytes, r.sha256])
    if target.suffix.lower() == ".zip":
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, source, *_ in entries:
                archive.write(source, name)
            archive.writestr("listing.csv", listing.getvalue())
    else:
        target.mkdir(parents=True, exist_ok=True)
        for name, source, *_ in entries:
            shutil.copyfile(source, target / name)
        (target / "listing.csv").write_text(listing.getvalue())
    return problems
