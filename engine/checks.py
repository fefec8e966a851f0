"""`fanout check`: each recorded output against its manifest row and its channel's rules."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np
import pyvips

from . import formats
from .image.decode import vips_message
from .rows import PUBLISHED, Row
from .rules import video_violations, violations
from .spec.models import Preset, Rules
from .store import sha256_of
from .video.hls import playlist_problems
from .video.probe import describe_output


def _file_facts(row: Row, preset: Preset | None, fmt: str, width: int,
                height: int) -> list[str]:
    """Extension, size against the manifest, and the exact size a fill or pad preset makes."""
    found = []
    if not row.path.endswith("." + formats.extension(fmt)):
        found.append(f"extension: {row.path} does not match its format {fmt}")
    if (width, height) != (row.width, row.height):
        found.append(f"size: expected {row.width}x{row.height}, found {width}x{height}")
    box = preset.resize if preset is not None else None
    if box is not None and box.fit in ("fill", "pad") and (width, height) != (
        box.width, box.height
    ):
        found.append(f"size: preset {row.preset} makes {box.width}x{box.height}, "
                     f"found {width}x{height}")
    return found


def _check_video(path: Path, row: Row, rules: Rules | None, preset: Preset | None) -> list[str]:
    """A video or animated output: decodes whole, and its facts match the manifest and rules."""
    found = []
    try:
        facts = describe_output(path, row.format)
        if row.format in formats.VIDEO_CONTAINERS:
            with av.open(str(path)) as container:
                for _ in container.decode(video=0):
                    pass
    except (av.FFmpegError, pyvips.Error, IndexError, ValueError) as exc:
        return [f"decode: not a readable {row.format} ({exc})"]
    found += _file_facts(row, preset, row.format, facts.width, facts.height)
    if row.duration_s is not None and abs(facts.duration_s - row.duration_s) > 0.01:
        found.append(f"duration: expected {row.duration_s:.3f} s, "
                     f"found {facts.duration_s:.3f} s")
    if (facts.video_codec, facts.audio_codec) != (row.video_codec, row.audio_codec):
        found.append(f"codecs: expected {row.video_codec}/{row.audio_codec}, "
                     f"found {facts.video_codec}/{facts.audio_codec}")
    if rules is not None:
        found += violations(rules, row.format, facts.width, facts.height,
                            path.stat().st_size, None) + video_violations(rules, facts)
    return found


def check_file(out: Path, row: Row, rules: Rules | None, preset: Preset | None) -> list[str]:
    path = out / row.path
    video = row.duration_s is not None  # a video, or an animation made from one
    try:
        if video:  # hashed in chunks: a video is not read whole
            with path.open("rb") as fh:
                digest = sha256_of(fh)
        else:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
    except FileNotFoundError:
        return ["missing: the manifest records it, the disk does not have it"]
    found = []
    if digest != row.sha256:
        found.append(f"sha256: expected {row.sha256[:16]}..., found {digest[:16]}... "
                     "(changed since it was rendered)")
    size = path.stat().st_size
    if size != row.bytes:
        found.append(f"bytes: expected {row.bytes}, found {size}")
    if row.format == "m3u8":  # an HLS playlist: every file it names is there, in range
        return found + playlist_problems(path)
    if video:
        return found + _check_video(path, row, rules, preset)
    try:
        image = pyvips.Image.new_from_buffer(data, "", fail_on="truncated")
        image.avg()  # decode every pixel: truncated or corrupt data fails here
    except pyvips.Error as exc:
        return found + [f"decode: not a readable image ({vips_message(exc)})"]
    loader = image.get("vips-loader")
    read_as = formats.by_loader(loader)
    fmt = read_as.name if read_as is not None else loader
    if fmt != row.format:
        found.append(f"format: expected {row.format}, found {fmt}")
    found += _file_facts(row, preset, fmt, image.width, image.height)
    if rules is not None:
        found += violations(rules, fmt, image.width, image.height, len(data), lambda: image)
    return found


def check_tree(
    out: Path, rows: list[Row], rules: dict[tuple[str, str], Rules], presets: dict[str, Preset]
) -> tuple[int, list]:
    """(files checked, [(path, problem)]) for every row of a manifest whose file is served
    (ok, skipped, and kept: a failed derivative's last good file)."""
    problems = []
    checked = 0
    for row in rows:
        if row.status not in PUBLISHED or not row.path:
            continue
        checked += 1
        problems += [(row.path, p) for p in check_file(
            out, row, rules.get((row.channel, row.output)), presets.get(row.preset))]
    return checked, problems


class PathSet:
    """A large set of paths (every file a manifest of 30 million rows claims) held as two
    64-bit hashes a path, this process's str hashes of the path and of it with a NUL after:
    16 bytes a path where a Python set of the strings takes over 100. Membership is exact
    unless two paths share both hashes (about 30M^2 / 2^128: never in practice)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._first = self._second = np.empty(0, np.int64)  # sorted by first

    @staticmethod
    def _pairs(paths: Iterable[str]) -> np.ndarray:
        flat = np.fromiter((h for p in paths for h in (hash(p), hash(p + "\0"))), np.int64)
        return flat.reshape(-1, 2)

    def update(self, paths: Iterable[str]) -> None:
        self._parts.append(self._pairs(paths))

    def missing(self, paths: list[str]) -> list[str]:
        """The paths not in the set, in their order."""
        if self._parts:  # sorted by first hash once, as two contiguous columns
            firsts = np.concatenate([self._first, *(part[:, 0] for part in self._parts)])
            seconds = np.concatenate([self._second, *(part[:, 1] for part in self._parts)])
            self._parts = []
            order = np.argsort(firsts)
            self._first = firsts[order]
            del firsts
            self._second = seconds[order]
            del seconds, order
        first, second, asked = self._first, self._second, self._pairs(paths)
        # asked in sorted order: each search starts where the last ended (NumPy's binary
        # search), instead of 25 cache misses a path across 480 MB of keys
        by_first = np.argsort(asked[:, 0])
        lo, hi = np.empty(len(asked), np.intp), np.empty(len(asked), np.intp)
        lo[by_first] = np.searchsorted(first, asked[by_first, 0], "left")
        hi[by_first] = np.searchsorted(first, asked[by_first, 0], "right")
        one = (hi - lo) == 1  # the usual case: the first hash alone places it
        hit = one & (second[np.minimum(lo, len(first) - 1)] == asked[:, 1]) if len(first) else one
        for i in np.flatnonzero(hi - lo > 1):  # first hashes shared: look along the run
            hit[i] = bool(np.any(second[lo[i]:hi[i]] == asked[i, 1]))
        return [p for p, found in zip(paths, hit.tolist(), strict=True) if not found]
