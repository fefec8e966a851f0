"""Real-world problem images, generated in code: orientations, colour spaces, depths, broken files.

Every image is an upright scene with a known layout (a red block in the top-left quarter, blue
elsewhere, a white frame) so a test can check orientation and colour after any transform.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pyvips

RED = (220, 30, 30)
BLUE = (30, 60, 200)


def scene(width: int = 480, height: int = 320) -> pyvips.Image:
    """Upright reference: blue field, red block in the top-left quarter, 8% white margin."""
    img = (pyvips.Image.black(width, height, bands=3) + list(BLUE)).cast("uchar")
    img = img.draw_rect(list(RED), 0, 0, width // 2, height // 2, fill=True)
    mx, my = int(width * 0.08), int(height * 0.08)
    inner = img.crop(mx, my, width - 2 * mx, height - 2 * my)
    framed = inner.embed(mx, my, width, height, extend="background", background=[255, 255, 255])
    return framed.copy(interpretation="srgb")


def _stored_for_orientation(upright: pyvips.Image, orientation: int) -> pyvips.Image:
    """The pixels a camera stores so that applying `orientation` shows `upright`."""
    return {
        1: lambda i: i,
        2: lambda i: i.fliphor(),
        3: lambda i: i.rot180(),
        4: lambda i: i.flipver(),
        5: lambda i: i.rot90().fliphor(),
        6: lambda i: i.rot270(),
        7: lambda i: i.rot270().fliphor(),
        8: lambda i: i.rot90(),
    }[orientation](upright)


def write_oriented(folder: Path, orientation: int) -> Path:
    stored = _stored_for_orientation(scene(), orientation).copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    path = folder / f"orient-{orientation}.jpg"
    stored.jpegsave(str(path), Q=95, keep="exif")
    return path


def write_cmyk(folder: Path, with_profile: bool) -> Path:
    cmyk = scene().icc_transform("cmyk")
    path = folder / ("cmyk-profile.jpg" if with_profile else "cmyk-bare.jpg")
    cmyk.jpegsave(str(path), Q=95, keep="icc" if with_profile else "none")
    return path


def write_16bit(folder: Path) -> Path:
    img = (scene().cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16")
    path = folder / "deep-16bit.png"
    img.pngsave(str(path), bitdepth=16)
    return path


def write_grey(folder: Path) -> Path:
    path = folder / "grey.jpg"
    scene().colourspace("b-w").jpegsave(str(path), Q=95)
    return path


def write_lab_tiff(folder: Path) -> Path:
    path = folder / "lab.tif"
    scene().colourspace("lab").tiffsave(str(path))
    return path


def write_alpha(folder: Path) -> Path:
    """A cut-out: the scene's inner part opaque, the margin fully transparent."""
    img = scene()
    alpha = (img.colourspace("b-w") < 250).ifthenelse(255, 0).cast("uchar")
    path = folder / "cutout.png"
    img.bandjoin(alpha).pngsave(str(path))
    return path


def write_animated(folder: Path, suffix: str) -> Path:
    frames = [scene(), scene().flipver(), scene().fliphor()]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", frames[0].height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100, 100, 100])
    path = folder / f"animated.{suffix}"
    strip.write_to_file(str(path))
    return path


def write_truncated(folder: Path) -> Path:
    data = scene(800, 600).jpegsave_buffer(Q=95)
    path = folder / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def write_corrupt(folder: Path) -> Path:
    data = bytearray(scene().jpegsave_buffer(Q=95))
    for i in range(200, len(data) - 2, 7):  # scribble over the entropy-coded data and tables
        data[i] = (data[i] * 31 + 17) & 0xFF
    path = folder / "corrupt.jpg"
    path.write_bytes(bytes(data))
    return path


def write_huge_header(folder: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid-looking PNG whose header claims width x height (a decompression bomb's shape)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width * 3 + 1) * 4)  # only four rows of data
    path = folder / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def write_problem_folder(folder: Path) -> dict[str, Path]:
    """Every case in one folder; returns {id: path}. Good and bad side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_oriented(folder, o) for o in range(1, 9)]
    paths += [write_cmyk(folder, True), write_cmyk(folder, False), write_16bit(folder),
              write_grey(folder), write_lab_tiff(folder), write_alpha(folder),
              write_animated(folder, "gif"), write_animated(folder, "webp")]
    # renamed so ids stay unique: the two animated files share a stem
    webp = folder / "animated.webp"
    webp.rename(folder / "animated-webp.webp")
    paths[-1] = folder / "animated-webp.webp"
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image\n")
    paths += [write_truncated(folder), write_corrupt(folder), write_huge_header(folder),
              folder / "empty.jpg", folder / "notes.jpg"]
    return {p.stem: p for p in paths}


GOOD = [f"orient-{o}" for o in range(1, 9)] + [
    "cmyk-profile", "cmyk-bare", "deep-16bit", "grey", "lab", "cutout", "animated",
    "animated-webp",
]
BAD = ["truncated", "corrupt", "huge", "empty", "notes"]
