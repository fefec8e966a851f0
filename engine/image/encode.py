"""Savers: per-format options, metadata stripped; quality = "auto" (the smallest file whose
SSIMULACRA2 score meets the preset's target, found in a few encodes); and the highest quality
under a byte budget."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import NamedTuple

import numpy as np
import pyvips

from .. import formats
from ..errors import MasterError
from ..spec.models import AUTO_RANGE, MATCH_SLACK, ImagePreset
from .ssimulacra2 import Reference

FULL_CHROMA_Q = 95  # JPEG: 4:4:4 from this quality up, 4:2:0 below


# match_quality's conventional AVIF encode is libaom at effort 1 (speed 8), whatever effort the
# output is encoded at. AVIF's quality scale moves with the effort and the libaom build: on the
# bytes benchmark's 33 AVIF references, effort 1 at Q50, less MATCH_SLACK, scored within about
# 1.5 points of sharp's default (q50 at effort 4, its own libaom 3.13), where this libaom's
# effort 4 at Q50 scored 1-9 points higher (effort 3 reached effort 4's Q50 score at Q45-50):
# anchored on those, "auto" would spend bytes looking better than the conventional file it
# stands in for. The search itself encodes at the output's effort (AVIF's default is 3).
ANCHOR_EFFORT: dict[str, int] = {"avif": 1}


# libvips options per output format (the saver itself is named in formats.py), for an encode at
# quality q and effort e; metadata is never kept.
def _jpeg(p: ImagePreset, q: int, e: int) -> dict[str, object]:
    # mozjpeg (built into pyvips-binary's libjpeg). Measured on two photo-like images and two
    # product shots (bytes at equal SSIMULACRA2 against libjpeg-turbo's settings, scores 68-82,
    # README "Encoding and quality"): trellis quantisation -2..-6%; quant table 3 (mozjpeg's
    # and ImageMagick's default) a further -8..-10% on photos at scores 68-75, about even at 82;
    # overshoot deringing 0..-1% (edges on flat backgrounds); optimised progressive scans -1.5%
    # on photos and -18..-23% on product shots. All four win; optimize_scans needs progressive.
    # Chroma is 4:2:0 below Q95 (libvips' own choice switches to 4:4:4 at Q90): at equal
    # SSIMULACRA2, 4:4:4 cost 5-30% more bytes at scores 68-82 and 10-30% more at 87-94 (the
    # Amazon and Instagram renditions, benchmarks/bytes.py's references). From Q95 it is
    # 4:4:4, so that the scores 4:2:0 cannot reach on a busy photo (about 88-95) stay
    # reachable for quality = "auto" (the score still rises with the quality across the switch).
    # Changing these: bump spec.models.ENCODER_SETTINGS["jpeg"] (in every JPEG recipe hash).
    options: dict[str, object] = {
        "Q": q, "optimize_coding": True, "interlace": p.progressive, "trellis_quant": True,
        "overshoot_deringing": True, "quant_table": 3,
        "subsample_mode": "on" if q < FULL_CHROMA_Q else "off", "keep": "none"}
    if p.progressive:
        options["optimize_scans"] = True
    return options


def _webp(p: ImagePreset, q: int, e: int) -> dict[str, object]:
    return {"Q": q, "effort": e, "keep": "none"}


def _avif(p: ImagePreset, q: int, e: int) -> dict[str, object]:
    # 4:4:4 (sharp's default too): at equal SSIMULACRA2, 4-9% fewer bytes than 4:2:0 on
    # product shots (saturated edges on white), far fewer on photos; encode time unchanged.
    # Changing these: bump spec.models.ENCODER_SETTINGS["avif"].
    return {"Q": q, "compression": "av1", "effort": e, "bitdepth": 8,
            "subsample_mode": "off", "keep": "none"}


def _png(p: ImagePreset, q: int, e: int) -> dict[str, object]:
    return {"compression": e, "keep": "none"}


SAVE_OPTIONS: dict[str, Callable[[ImagePreset, int, int], dict[str, object]]] = {
    "jpeg": _jpeg, "webp": _webp, "avif": _avif, "png": _png,
}

# quality = "auto". A search encodes at most MAX_SEARCH times; once a master's derivative has
# settled a format's quality, the next derivatives of that format start there and stop after
# HINTED_SEARCH tries once one passes (the quality a target needs changes little from one size
# to the next; a small image searched whole with all its tries cost the test suite's catalogs
# of small masters a fifth more render time for a few hundred bytes). A derivative of more
# than PROXY_MAX_PIXELS is searched on a proxy instead: a 2x2 mosaic of PROXY_TILE-pixel tiles
# cut from it at full scale (compression artefacts depend on the pixel scale, so a proxy is
# never a shrunk copy), then encoded whole once at the quality found.
# Tiles sit on a 16-pixel grid, so a JPEG codes their blocks as in the whole image. The whole
# file is scored (the manifest's score is always the written file's) when it has at most
# SCORE_MAX_PIXELS; a larger one records no score: scoring it would cost several encodes.
MAX_SEARCH = 5
HINTED_SEARCH = 2
PROXY_TILE = 192  # 384x384 mosaic: six SSIMULACRA2 scales, the smallest 12 px
PROXY_MAX_PIXELS = 200_000  # search whole up to this
PLAIN_SPREAD = 0.5  # a tile whose levels (0-255) spread less than this is plain
SCORE_MAX_PIXELS = 1_200_000
# Where a search starts when no earlier derivative of the master gave a hint, and the score
# points one quality step buys (measured on photos and product shots: JPEG 0.5-0.7, WebP
# 0.4-0.6, AVIF 0.6-0.8), which aims the first steps.
START = {"jpeg": 70, "webp": 75, "avif": 50}
SLOPE = {"jpeg": 0.6, "webp": 0.5, "avif": 0.7}
# A whole-image score this far below target after a proxy search gets one correcting encode.
PROXY_SLACK = 0.5
# Of MATCH_SLACK, kept in reserve where a proxy alone decides a matched WebP or AVIF target.
PROXY_MATCH_RESERVE = 0.5
# ... and how far below match_quality such a proxy's choice is trusted. Beyond it the file is
# encoded at match_quality itself (no more bytes than the conventional file). On the bytes
# benchmark's 6-master catalog the proxies chose WebP 68-80 and AVIF 39-76 for 80 and 50, but
# WebP 30 on a smooth gradient's 2048 px rendition, which scored 4.4 below the conventional
# encode: libwebp segments the whole image before it quantises, which tiles do not show.
PROXY_TRUST = 15


class Encoded(NamedTuple):
    data: bytes
    quality: int
    # SSIMULACRA2 against the unencoded image: quality = "auto" up to SCORE_MAX_PIXELS, or
    # under a byte budget that binds; None otherwise
    score: float | None


class Scoring:
    """What one master's derivatives share when they are encoded: reference images prepared
    for SSIMULACRA2 (one derivative's pixels are often encoded in two or three formats in a
    row), the quality each format last settled at (where the next search starts), and what
    each encode produced (`done`: the same pixels with the same encoding settings are encoded
    once, e.g. a 640, an 828 and a 1080 px "limit" rendition of a 600 px master).

    References are large (about 48 bytes a pixel over the pyramid), so only the last few are
    kept; derivatives of one size are rendered one after another. `done` holds the files the
    master's task returns anyway (and a breakpoints set's candidates it did not choose: a few
    encodes of one set, freed with the master).
    """

    KEEP = 2

    def __init__(self) -> None:
        self._refs: OrderedDict[Hashable, Reference] = OrderedDict()
        self._proxies: OrderedDict[Hashable, pyvips.Image | None] = OrderedDict()
        self.hints: dict[tuple[str, float], int] = {}
        self.done: dict[Hashable, Encoded] = {}

    def reference(self, key: Hashable, image: pyvips.Image) -> Reference:
        if key not in self._refs:
            self._refs[key] = Reference(image)
            while len(self._refs) > self.KEEP:
                self._refs.popitem(last=False)
        self._refs.move_to_end(key)
        return self._refs[key]

    def proxy(self, key: Hashable, image: pyvips.Image, wide: bool = True) -> pyvips.Image | None:
        key = (key, wide)
        if key not in self._proxies:
            self._proxies[key] = proxy(image, wide)
            while len(self._proxies) > 4 * self.KEEP:
                self._proxies.popitem(last=False)
        return self._proxies[key]


def describe(preset: ImagePreset, quality: int) -> str:
    """The saver and the options that decided the bytes, as text for the manifest, e.g.
    "jpegsave Q=85 optimize_coding=1 interlace=1 ..." (metadata is always stripped: not
    listed; quality = "auto" adds its target, e.g. "auto=80")."""
    options = SAVE_OPTIONS[preset.format](preset, quality, preset.effective_effort)
    shown = [f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in options.items()
             if k != "keep"]
    if preset.auto and preset.target_score is not None:
        shown.append(f"auto={preset.target_score:g}")
    if preset.auto and preset.match_quality is not None:
        shown.append(f"match={preset.match_quality}")
    return " ".join([formats.output(preset.format).saver or preset.format, *shown])


def _saver(preset: ImagePreset, effort: int | None = None) -> Callable[[pyvips.Image, int], bytes]:
    """The encoder of a derivative: at quality q, at the preset's effort unless `effort`."""
    operation = f"{formats.output(preset.format).saver}_buffer"
    options = SAVE_OPTIONS[preset.format]
    e = preset.effective_effort if effort is None else effort
    return lambda img, q: getattr(img, operation)(**options(preset, q, e))


def encode(image: pyvips.Image, preset: ImagePreset) -> tuple[bytes, int]:
    """`save` without the score: the bytes and the quality used. The image may be a
    sequential pipeline (a thumbnail from a file): "auto" encodes it several times, so it is
    rendered into memory first."""
    done = save(image.copy_memory() if preset.auto else image, preset)
    return done.data, done.quality


def save(image: pyvips.Image, preset: ImagePreset, scoring: Scoring | None = None,
         key: Hashable = None) -> Encoded:
    """Encode at the preset's quality, or search it (quality = "auto"); under max_bytes the
    budget wins: the highest quality that fits, down to min_quality.

    `scoring` and `key` (what identifies these pixels among the master's derivatives) let
    derivatives share references, hints and results (Scoring.done); without them each call
    prepares its own. The budget search is a bisection over quality (about
    log2(quality - min_quality) extra encodes of the in-memory image, only when the first is
    over budget).
    """
    fmt = formats.output(preset.format)
    if max(image.width, image.height) > (fmt.max_side or 0):
        raise MasterError(
            f"the output would be {image.width}x{image.height}, beyond what {fmt.name} "
            f"can hold ({fmt.max_side} pixels a side); the master's aspect is too extreme for "
            "this preset"
        )
    if not fmt.alpha and image.hasalpha():  # render flattens first
        raise MasterError(f"internal: {fmt.name} output still has alpha")
    encoder = _saver(preset)
    scoring = scoring if scoring is not None else Scoring()
    if key is None:
        key = ("image", id(image))
        return _save(image, preset, encoder, scoring, key)
    # `key` decides the pixels (their size too: references share it); everything else of the
    # preset that is not geometry decides the bytes (an identical rendition under another
    # recipe gets the identical file)
    done = (key, preset.model_dump_json(exclude=GEOMETRY))
    if done not in scoring.done:
        scoring.done[done] = _save(image, preset, encoder, scoring, key)
    return scoring.done[done]


# The preset fields a `save` key stands for (they decide the pixels, not how they are encoded).
GEOMETRY = {"resize", "trim", "upscale", "breakpoints", "description"}


def _save(image: pyvips.Image, preset: ImagePreset, encoder: Callable[[pyvips.Image, int], bytes],
          scoring: Scoring, key: Hashable) -> Encoded:
    """`save` once its checks are done and its result is not known yet."""

    def whole_score(data: bytes) -> float:
        decoded = pyvips.Image.new_from_buffer(data, "")
        return scoring.reference(key, image).score(decoded)

    if preset.auto:
        data, quality, score = _auto(image, preset, encoder, scoring, key, whole_score)
    else:
        quality = preset.effective_quality
        data, score = encoder(image, quality), None
    if preset.max_bytes is None or len(data) <= preset.max_bytes:
        return Encoded(data, quality, score)
    lo, hi = preset.min_quality, quality - 1
    best: tuple[bytes, int] | None = None
    candidate = data
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = encoder(image, mid)
        if len(candidate) <= preset.max_bytes:
            best, lo = (candidate, mid), mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise MasterError(
            f"cannot fit {preset.max_bytes} bytes: {len(candidate)} bytes even at the minimum "
            f"quality {preset.min_quality}"
        )
    # A budget that binds is worth one score at any size: it says what the budget cost.
    return Encoded(best[0], best[1], whole_score(best[0]) if preset.auto else None)


def _plain_jpeg(image: pyvips.Image, q: int) -> bytes:
    """The conventional JPEG at quality q that match_quality measures against: libjpeg-turbo's
    own settings (standard tables, no trellis, 4:2:0 below Q90: libvips', sharp's and
    ImageMagick's defaults). WebP's conventional encode is fanout's own (no setting of
    libwebp's is tuned beyond the preset's effort): a search step; AVIF's is fanout's own at
    ANCHOR_EFFORT."""
    return image.jpegsave_buffer(Q=q, keep="none")


def _auto(image: pyvips.Image, preset: ImagePreset, encoder: Callable[[pyvips.Image, int], bytes],
          scoring: Scoring, key: Hashable,
          whole_score: Callable[[bytes], float]) -> tuple[bytes, int, float | None]:
    """The smallest quality whose file scores at least the target (or the range's top)."""
    lo, hi = AUTO_RANGE[preset.format]
    floor = preset.target_score
    match = preset.match_quality
    hint = (preset.format, floor, match)
    # JPEG over SCORE_MAX_PIXELS searches the wide proxy (3x3 tiles; it keeps no reserve);
    # WebP and AVIF a 2x2 one, shared (WebP on the 3x3 cost twice the encodes and scores for
    # no better prediction: on the 6-master catalog, its files over 1.2 MP scored a median
    # 0.2 below the conventional encode either way)
    wide = preset.format == "jpeg" and image.width * image.height > SCORE_MAX_PIXELS
    small = scoring.proxy(key, image, wide)
    tries = HINTED_SEARCH if hint in scoring.hints else MAX_SEARCH
    slope = SLOPE[preset.format]
    pixels = image if small is None else small  # what the search encodes and scores
    ref = scoring.reference(key if small is None else (key, "proxy", wide), pixels)
    encoded: dict[int, bytes] = {}

    def at(q: int) -> float:
        data = encoder(pixels, q)
        if small is None:  # the image itself: keep what the search encoded
            encoded[q] = data
        return ref.score(pyvips.Image.new_from_buffer(data, ""))

    # A matched target is checked on the whole image where that is cheap (JPEG, up to
    # SCORE_MAX_PIXELS). Where a WebP or AVIF proxy decides alone, PROXY_MATCH_RESERVE of the
    # slack is kept in reserve (their proxy's score gap to the conventional encode differed
    # from the whole image's by up to a point on the benchmark's catalog). JPEG's 3x3 proxy
    # over SCORE_MAX_PIXELS keeps none: without it, its files over 1.2 MP scored at most 1.6
    # below the conventional encode on the 6-master catalog (49 files; median 0.7).
    checked = small is None or (image.width * image.height <= SCORE_MAX_PIXELS
                                and (match is None or preset.format == "jpeg"))
    proxy_alone = not checked and preset.format != "jpeg"  # a WebP or AVIF proxy decides
    target = _target(preset, pixels, ref, at, PROXY_MATCH_RESERVE if proxy_alone else 0.0)
    known = {} if target.search_step is None else {target.search_step: target.anchor_score}
    start = scoring.hints.get(hint, START[preset.format] if match is None else match)
    quality, score = search(at, target.score, lo, hi, start, slope, tries, known)
    if proxy_alone and match is not None and quality < match - PROXY_TRUST:
        quality = min(hi, match)  # the proxy is out of its depth: the conventional quality
    scoring.hints[hint] = quality
    if small is None:
        return encoded[quality], quality, score
    data = encoder(image, quality)
    if image.width * image.height > SCORE_MAX_PIXELS or not checked:
        return data, quality, None  # scoring the whole would cost another search step or more
    score = whole_score(data)
    # The whole image's own target: the proxy stands in for it, but may be kinder. A matched
    # target is measured on the whole image too (JPEG only: its conventional encode costs a
    # fraction of the search's; WebP's and AVIF's would cost a whole encode and a score,
    # about a third more time for "auto" on the benchmark's catalog, so there the proxy's
    # target, kept in reserve, stands and the file records no score).
    if match is None:
        goal, slack = target.score, PROXY_SLACK
    else:
        goal, slack = _target(preset, image, scoring.reference(key, image)).score, 0.0
    for _ in range(1 if match is None else 2):
        if score >= goal - slack or quality >= hi:
            break
        better = min(hi, quality + max(1, math.ceil((goal - score) / slope)))
        data2 = encoder(image, better)
        score2 = whole_score(data2)
        if score2 <= score:
            break
        data, quality, score = data2, better, score2
    # ... or harsher: a whole image well above its goal (two steps' worth or more: the proxy's
    # tiles were busier than the whole) gets one encode aimed halfway down to it (the score
    # falls faster than `slope` below a proxy's choice), kept if it still passes
    if match is not None and score - goal >= 2 * slope and quality > lo:
        lower = max(lo, quality - math.floor((score - goal) / (2 * slope)))
        data2 = encoder(image, lower)
        score2 = whole_score(data2)
        if score2 >= goal:
            data, quality, score = data2, lower, score2
    return data, quality, score


class _Target(NamedTuple):
    score: float
    anchor_score: float | None = None  # match_quality's conventional encode, scored
    search_step: int | None = None  # its quality, when it is the search's own encoder's


def _target(preset: ImagePreset, pixels: pyvips.Image, ref: Reference,
            score_at: Callable[[int], float] | None = None, reserve: float = 0.0) -> _Target:
    """The score "auto" must reach on `pixels`: the preset's target, and with match_quality the
    conventional encode's score there less MATCH_SLACK, less `reserve` of it (the higher of
    the two when both).
    `score_at` scores the search's own encoder at a quality (for WebP and AVIF the
    conventional encode is that encoder's: its score is a search step already taken)."""
    floor = preset.target_score if preset.target_score is not None else -math.inf
    match = preset.match_quality
    if match is None:
        return _Target(floor)
    if preset.format == "jpeg":
        anchor = ref.score(pyvips.Image.new_from_buffer(_plain_jpeg(pixels, match), ""))
        return _Target(max(floor, anchor - MATCH_SLACK + reserve), anchor)
    lo, hi = AUTO_RANGE[preset.format]
    step = min(hi, max(lo, match))
    anchor_effort = ANCHOR_EFFORT.get(preset.format, preset.effective_effort)
    if anchor_effort != preset.effective_effort:  # not a search step: an encode of its own
        plain = _saver(preset, anchor_effort)(pixels, step)
        anchor = ref.score(pyvips.Image.new_from_buffer(plain, ""))
        return _Target(max(floor, anchor - MATCH_SLACK + reserve), anchor)
    assert score_at is not None
    anchor = score_at(step)
    return _Target(max(floor, anchor - MATCH_SLACK + reserve), anchor, step)


def search(score_at: Callable[[int], float], target: float, lo: int, hi: int, start: int,
           slope: float, tries: int = MAX_SEARCH,
           known: dict[int, float] | None = None) -> tuple[int, float]:
    """The smallest quality in lo..hi whose score (a rising function of quality) reaches
    `target`: a slope-aimed step until the target is bracketed, then the secant between the
    bracket's ends; it stops after `tries` evaluations once one passes, and after MAX_SEARCH in
    any case. Returns (quality, its score); when no quality tried reaches the target, the
    highest tried (the range's top if the evaluations allow). `known`: scores already
    measured (free: they count as neither tries nor evaluations)."""
    scores: dict[int, float] = dict(known or {})
    q = min(hi, max(lo, start))
    for attempt in range(1, MAX_SEARCH + 1):
        if q not in scores:
            scores[q] = score_at(q)
        passing = [k for k, s in scores.items() if s >= target]
        failing = [k for k, s in scores.items() if s < target]
        up = min(passing) if passing else None  # lowest quality known to pass
        down = max(failing) if failing else None  # highest quality known to fail
        if up is not None and (up == lo or (down is not None and up - down <= 1)
                               or attempt >= tries):
            break
        if up is None and down == hi:
            break
        if up is not None and down is not None:
            # the secant, kept in the bracket's middle half: the score is far from linear in
            # quality near the top (WebP flattens; JPEG stops subsampling chroma at Q90)
            s_up, s_down = scores[up], scores[down]
            guess = down + (target - s_down) * (up - down) / max(1e-6, s_up - s_down)
            quarter = (up - down) // 4
            nxt = min(up - 1 - quarter, max(down + 1 + quarter, math.ceil(guess)))
        elif up is None:  # everything tried fails: step up, aiming at the target
            assert down is not None
            nxt = min(hi, down + max(2, math.ceil((target + 0.5 - scores[down]) / slope)))
        else:  # everything tried passes: step down, aiming at the target (one step when
            # the margin is under two steps' worth: two would overshoot into failing)
            nxt = max(lo, up - max(1, math.floor((scores[up] - target) / slope)))
        if nxt in scores:
            break
        q = nxt
    passing = [k for k, s in scores.items() if s >= target]
    best = min(passing) if passing else max(scores)
    return best, scores[best]


def proxy(image: pyvips.Image, wide: bool = True) -> pyvips.Image | None:
    """A mosaic of full-scale tiles standing in for a large image in a quality search, or None
    when the image is small enough to search whole (or too narrow for the tiles): 2x2 tiles,
    3x3 over SCORE_MAX_PIXELS (where no whole-image score checks what the proxy found) when
    `wide` (JPEG's: WebP and AVIF search 2x2, with a target in reserve).

    The tiles are a sample of the image's detail: ranked by local detail (mean absolute
    difference from a 2x-smoothed copy, the part that costs bytes and shows artefacts), the
    most detailed and those evenly spaced down the ranking (a quarter, half and three quarters
    for 2x2). Plain tiles (a product shot's white margins: one level throughout) are left out
    of the ranking when enough others remain: every encoder reproduces them, so they would only
    dilute the sample; a product on white is judged on the product, its edges and its shadow.
    A smooth gradient is not plain (it has no local detail, but encoders band there): it stays
    in the ranking, at its detailless end.
    """
    t = PROXY_TILE
    cols, rows = image.width // t, image.height // t
    if image.width * image.height <= PROXY_MAX_PIXELS or cols * rows < 4:
        return None
    grey = image.extract_band(1) if image.bands >= 3 else image.extract_band(0)
    half = grey.shrink(2, 2)
    smooth = half.shrink(2, 2).zoom(2, 2).crop(0, 0, half.width // 2 * 2, half.height // 2 * 2)
    detail = (half.crop(0, 0, smooth.width, smooth.height).cast("float") - smooth).abs()
    side = t // 2
    # per tile, in one pass: mean local detail, and the spread of its levels (standard
    # deviation: zero on a plain margin, but not on a smooth gradient, which has no local
    # detail yet is where encoders band)
    level = half.crop(0, 0, smooth.width, smooth.height).cast("float")
    stats = detail.bandjoin([level, level * level]).crop(0, 0, cols * side, rows * side)
    stats = stats.shrink(side, side).numpy().reshape(rows, cols, 3)
    per_tile = stats[..., 0]
    spread = np.sqrt(np.maximum(0, stats[..., 2] - stats[..., 1] ** 2))
    ranking = np.argsort(-per_tile.reshape(-1), kind="stable")
    # 3x3 where the proxy decides alone (no whole-image score follows): a wider sample
    grid = 3 if wide and image.width * image.height > SCORE_MAX_PIXELS and cols * rows >= 9 \
        else 2
    count = grid * grid
    textured = ranking[spread.reshape(-1)[ranking] > PLAIN_SPREAD]
    if len(textured) >= count:
        ranking = textured
    n = len(ranking)
    picks = [int(ranking[min(n - 1, i * n // count)]) for i in range(count)]
    tiles = [image.crop((p % cols) * t, (p // cols) * t, t, t) for p in picks]
    return pyvips.Image.arrayjoin(tiles, across=grid).copy_memory()
