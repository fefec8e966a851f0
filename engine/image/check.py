"""`fanout check`: each recorded output against its manifest row and its channel's rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyvips

from ..spec.models import EXTENSIONS, Preset, Rules
from .decode import vips_message
from .rules import violations

LOADER_FORMATS = {"jpegload_buffer": "jpeg", "webpload_buffer": "webp", "heifload_buffer": "avif",
                  "pngload_buffer": "png", "gifload_buffer": "gif"}


def check_file(out: Path, row: dict, rules: Rules | None, preset: Preset | None) -> list[str]:
    path = out / row["path"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ["missing: the manifest records it, the disk does not have it"]
    found = []
    digest = hashlib.sha256(data).hexdigest()
    if digest != row["sha256"]:
        found.append(f"sha256: expected {row['sha256'][:16]}..., found {digest[:16]}... "
                     "(changed since it was rendered)")
    if len(data) != row["bytes"]:
        found.append(f"bytes: expected {row['bytes']}, found {len(data)}")
    try:
        image = pyvips.Image.new_from_buffer(data, "", fail_on="truncated")
        image.avg()  # decode every pixel: truncated or corrupt data fails here
    except pyvips.Error as exc:
        return found + [f"decode: not a readable image ({vips_message(exc)})"]
    fmt = LOADER_FORMATS.get(image.get("vips-loader"), image.get("vips-loader"))
    if fmt != row["format"]:
        found.append(f"format: expected {row['format']}, found {fmt}")
    if not row["path"].endswith("." + EXTENSIONS.get(fmt, fmt)):
        found.append(f"extension: {row['path']} does not match its format {fmt}")
    if (image.width, image.height) != (row["width"], row["height"]):
        found.append(f"size: expected {row['width']}x{row['height']}, "
                     f"found {image.width}x{image.height}")
    box = preset.resize if preset is not None else None
    if box is not None and box.fit in ("fill", "pad") and (image.width, image.height) != (
        box.width, box.height
    ):
        found.append(f"size: preset {row['preset']} makes {box.width}x{box.height}, "
                     f"found {image.width}x{image.height}")
    if rules is not None:
        found += violations(rules, fmt, image.width, image.height, len(data), lambda: image)
    return found


def check_tree(
    out: Path, rows: list[dict], rules: dict[tuple[str, str], Rules], presets: dict[str, Preset]
) -> tuple[int, list]:
    """(files checked, [(path, problem)]) for every ok/skipped row of a manifest."""
    problems = []
    checked = 0
    for row in rows:
        if row["status"] not in ("ok", "skipped") or not row["path"]:
            continue
        checked += 1
        problems += [(row["path"], p) for p in check_file(
            out, row, rules.get((row["channel"], row["output"])), presets.get(row["preset"]))]
    return checked, problems
