"""Make the small committed master samples of tests/test_master_formats.py (each a few KB).

    .venv/bin/python tests/samples/make_samples.py

HEICs are encoded by pillow-heif's bundled x265 (HEVC); the Ultra HDR JPEG by libvips'
uhdrsave (libultrahdr); SVGs are written as text. Every image is a 64x48 picture of four
coloured quadrants (QUADRANTS, in sRGB), so a test can check size, colour and orientation at
once. Colour-managed samples store the same sRGB colours in another space (Display P3 by ICC or
by nclx, BT.2020 by nclx), so a correct decode gives back QUADRANTS.

The tests read the committed files; they do not need the encoders. Re-run this script only to
change the samples, and commit what it writes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyvips

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 64, 48
# top-left, top-right, bottom-left, bottom-right (sRGB): distinct hues, inside every gamut here
QUADRANTS = ((200, 40, 40), (40, 160, 60), (50, 70, 200), (230, 210, 60))
MULTI_PRIMARY = (120, 40, 160)  # the multi-image sample's primary image is this one colour
BT2020_TO_709 = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083],
                          [-0.0182, -0.1006, 1.1187]])


def quadrants(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """HxWx3 uint8 sRGB."""
    out = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    out[:h2, :w2], out[:h2, w2:] = QUADRANTS[0], QUADRANTS[1]
    out[h2:, :w2], out[h2:, w2:] = QUADRANTS[2], QUADRANTS[3]
    return out


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.clip(v, 0, None) ** (1 / 2.4) - 0.055)


def to_bt2020(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> BT.2020 primaries with the sRGB curve, floats 0..1 (what heif.py undoes)."""
    linear = _srgb_to_linear(rgb / 255.0)
    return _linear_to_srgb(linear @ np.linalg.inv(BT2020_TO_709).T).clip(0, 1)


def to_p3(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> Display P3 uint8, through libvips' built-in profiles."""
    image = pyvips.Image.new_from_array(rgb).copy(interpretation="srgb")
    p3 = image.icc_transform("p3", input_profile="srgb")
    return p3.numpy().astype(np.uint8).reshape(rgb.shape)


def heic(mode: str, pixels: np.ndarray, **save) -> bytes:
    import pillow_heif

    height, width = pixels.shape[:2]
    image = pillow_heif.from_bytes(mode, (width, height), np.ascontiguousarray(pixels).tobytes())
    buffer = io.BytesIO()
    image.save(buffer, quality=95, **save)
    return buffer.getvalue()


def wide(pixels: np.ndarray) -> np.ndarray:
    """uint8 -> uint16 at the full 16-bit range (pillow-heif's ;16 modes)."""
    return pixels.astype(np.uint16) * 257


def exif_orientation(value: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def samples() -> dict[str, bytes]:
    import pillow_heif

    q = quadrants()
    alpha = np.full((HEIGHT, WIDTH, 1), 255, np.uint8)
    alpha[:, : WIDTH // 2] = 0  # left half transparent
    out = {
        "heic-8bit.heic": heic("RGB", q),
        "heic-10bit.heic": heic("RGB;16", wide(q)),
        "heic-alpha.heic": heic("RGBA", np.concatenate([q, alpha], axis=2)),
        "heic-icc-p3.heic": heic("RGB", to_p3(q), icc_profile=pyvips.Image.profile_load("p3")),
        "heic-nclx-p3.heic": heic("RGB", to_p3(q), color_primaries=12,
                                  transfer_characteristic=13, matrix_coefficients=6),
        "heic-nclx-bt2020.heic": heic("RGB;16", (to_bt2020(q) * 65535).round().astype(np.uint16),
                                      color_primaries=9, transfer_characteristic=13,
                                      matrix_coefficients=6),
        # stored sideways; irot (and EXIF, as iPhones write both) say: turn 90 degrees clockwise
        "heic-rotated.heic": heic("RGB", np.rot90(q, k=1).copy(), exif=exif_orientation(6)),
    }
    pillow_heif.options.SAVE_HDR_TO_12_BIT = True
    try:
        out["heic-12bit.heic"] = heic("RGB;16", wide(q))
    finally:
        pillow_heif.options.SAVE_HDR_TO_12_BIT = False
    # two images, the second primary (a thumbnail-sized first image, as burst/live files hold)
    multi = pillow_heif.from_bytes("RGB", (32, 24), np.ascontiguousarray(q[::2, ::2]).tobytes())
    one = np.zeros((HEIGHT, WIDTH, 3), np.uint8) + np.array(MULTI_PRIMARY, np.uint8)
    multi.add_frombytes("RGB", (WIDTH, HEIGHT), one.tobytes())
    buffer = io.BytesIO()
    multi.save(buffer, quality=95, primary_index=1)
    out["heic-multi.heic"] = buffer.getvalue()
    # Ultra HDR: an SDR JPEG plus gain map (MPF + XMP), EXIF orientation 6, stored sideways
    hdr = pyvips.Image.new_from_array(np.rot90(q, k=1).copy()).copy(interpretation="srgb")
    hdr = hdr.colourspace("scrgb")
    hdr.set_type(pyvips.GValue.gint_type, "orientation", 6)
    out["uhdr-rotated.jpg"] = hdr.uhdrsave_buffer(Q=95)
    out.update(svgs())
    return out


def svgs() -> dict[str, bytes]:
    h2, w2 = HEIGHT // 2, WIDTH // 2

    def rect(x: int, y: int, colour: tuple[int, int, int]) -> str:
        return f'<rect x="{x}" y="{y}" width="{w2}" height="{h2}" fill="rgb{colour}"/>'

    body = "".join(rect(x, y, c) for (x, y), c in
                   zip([(0, 0), (w2, 0), (0, h2), (w2, h2)], QUADRANTS, strict=True))
    return {
        # an Illustrator-style export: XML declaration, comment, DOCTYPE, viewBox only
        "svg-quadrants.svg": (
            '<?xml version="1.0" encoding="UTF-8"?>\n<!-- Generator: fanout tests -->\n'
            '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
            '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}">{body}</svg>\n'
        ).encode(),
        # a transparent logo: a 10 mm circle on nothing
        "svg-logo-transparent.svg": (
            '<svg xmlns="http://www.w3.org/2000/svg" width="10mm" height="10mm" '
            'viewBox="0 0 100 100"><circle cx="50" cy="50" r="40" fill="#c82828"/></svg>\n'
        ).encode(),
    }


def main() -> None:
    for name, data in samples().items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
