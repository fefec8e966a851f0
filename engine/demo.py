"""A small synthetic catalog, made in code, that exercises what real catalogs throw at fanout.

Product shots on white with margins and a soft shadow, a transparent PNG cut-out, a CMYK JPEG
with an embedded profile, a photo stored sideways with an EXIF orientation, and an editorial
lifestyle scene; and a short product video with sound.
"""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyvips


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:height, 0:width].astype(np.float32)


def _ellipse(width: int, height: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    y, x = _grid(width, height)
    return (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0).astype(np.float32)


def _to_image(rgb: np.ndarray) -> pyvips.Image:
    return pyvips.Image.new_from_array(np.ascontiguousarray(rgb.clip(0, 255).astype(np.uint8)),
                                       interpretation="srgb")


def product_shot(width: int, height: int, colour: tuple[int, int, int],
                 shape: str = "ellipse") -> np.ndarray:
    """A product on white: a shaded body, margins, and a soft shadow beneath it."""
    y, x = _grid(width, height)
    cx, cy = width * 0.5, height * 0.47
    rx, ry = width * 0.28, height * 0.3
    if shape == "box":
        body = ((abs(x - cx) <= rx) & (abs(y - cy) <= ry)).astype(np.float32)
    else:
        body = _ellipse(width, height, cx, cy, rx, ry)
    shadow = _ellipse(width, height, cx, cy + ry * 1.02, rx * 0.9, ry * 0.12)
    shadow_img = pyvips.Image.new_from_array(shadow).gaussblur(max(2.0, width / 120))
    shadow = shadow_img.numpy().astype(np.float32).reshape(height, width)
    shade = 0.75 + 0.25 * (1 - (y - (cy - ry)) / (2 * ry)).clip(0, 1)
    rgb = np.full((height, width, 3), 255.0, dtype=np.float32)
    rgb -= shadow[..., None] * 70
    for band, value in enumerate(colour):
        rgb[..., band] = np.where(body > 0, value * shade, rgb[..., band])
    return rgb


def lifestyle_scene(width: int, height: int) -> np.ndarray:
    """A sky-to-floor gradient with a sun and a subject off-centre: something to smart-crop."""
    y, x = _grid(width, height)
    t = y / height
    rgb = np.stack([90 + 120 * t, 140 + 60 * t, 220 - 120 * t], axis=-1)
    sun = _ellipse(width, height, width * 0.2, height * 0.25, height * 0.08, height * 0.08)
    rgb = np.where(sun[..., None] > 0, [255, 220, 120], rgb)
    subject = _ellipse(width, height, width * 0.68, height * 0.6, width * 0.09, height * 0.28)
    rgb = np.where(subject[..., None] > 0, [180, 40, 60], rgb)
    noise = np.random.default_rng(7).normal(0, 6, rgb.shape)
    return rgb + noise


def product_video(
    path: Path,
    width: int = 640,
    height: int = 360,
    seconds: float = 2.0,
    fps: int = 30,
    *,
    audio: bool = True,
    flashes: tuple[float, ...] = (),
    rotation: int = 0,
    noise: float = 8.0,
    codec: str = "libx264",
    audio_codec: str = "aac",
    container: str | None = None,
    vfr: bool = False,
    start_s: float = 0.0,
) -> Path:
    """A product video made in code: a coloured product turning over a gradient, film grain
    (`noise`, so encoders have real work), white flash frames at `flashes` seconds with a beep
    in the audio at the same instants (to check sync), a quiet hum otherwise.

    `rotation` stores the pixels sideways with a display matrix, as phones do; `vfr` spaces
    frames unevenly (variable frame rate).
    """
    rng = np.random.default_rng(11)
    frames = int(round(seconds * fps))
    coded_w, coded_h = (height, width) if rotation % 180 else (width, height)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = coded_w, coded_h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps * 100)
        if rotation:
            stream.set_display_rotation(rotation)
        astream = None
        if audio:
            astream = out.add_stream(audio_codec, rate=48000, layout="stereo")
            if audio_codec == "vorbis":
                astream.codec_context.options = {"strict": "experimental"}
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.stack([60 + 100 * y / height, 80 + 60 * y / height, 140 - 60 * y / height], -1)
        pts = first = round(start_s * fps * 100)
        for i in range(frames):
            t = i / fps
            cx = width * (0.3 + 0.4 * i / max(1, frames - 1))
            rx, ry = width * 0.12, height * 0.3
            body = ((x - cx) / rx) ** 2 + ((y - height * 0.55) / ry) ** 2 <= 1
            rgb = np.where(body[..., None], [200, 40 + 100 * i / max(1, frames), 60], base)
            rgb[: height // 8, : width // 8] = [255, 0, 0]  # a red mark at the top left
            rgb = rgb + rng.normal(0, noise, rgb.shape)
            if any(abs(t - f) < 0.5 / fps for f in flashes):
                rgb[:] = 255
            image = np.ascontiguousarray(rgb.clip(0, 255).astype(np.uint8))
            if rotation % 360 == 90:  # displayed turned 90 counter-clockwise: store it clockwise
                image = np.ascontiguousarray(np.rot90(image, -1))
            elif rotation % 360 == 270:
                image = np.ascontiguousarray(np.rot90(image, 1))
            elif rotation % 360 == 180:
                image = np.ascontiguousarray(image[::-1, ::-1])
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = pts
            pts += 100 if not vfr else (60 if i % 3 == 0 else 120)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            rate, size = 48000, 1024
            total = int(((pts - first) / (fps * 100)) * rate)
            for start in range(0, total, size):
                n = min(size, total - start)
                t = (start + np.arange(n)) / rate
                wave = 0.02 * np.sin(2 * np.pi * 110 * t)
                for f in flashes:
                    beep = 0.6 * np.sin(2 * np.pi * 880 * t)
                    wave = np.where((t >= f) & (t < f + 0.1), beep, wave)
                samples = np.stack([wave, wave]).astype(np.float32)
                audio_frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
                audio_frame.sample_rate = rate
                audio_frame.pts = start + round(start_s * rate)
                out.mux(astream.encode(audio_frame))
            out.mux(astream.encode(None))
    return path


def build(folder: Path) -> Path:
    """Write the demo masters and their listing under folder; returns the listing's path."""
    masters = folder / "masters"
    masters.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def add(id_: str, name: str, product: str, position: int, role: str) -> None:
        words = id_.replace("/", " ").replace("-", " ")  # alt text and title, as a PIM has them
        rows.append({"id": id_, "path": f"masters/{name}", "product": product,
                     "position": position, "role": role, "alt": f"{words.capitalize()}",
                     "title": product.replace("-", " ").title()})

    _to_image(product_shot(2000, 2000, (200, 40, 40))).jpegsave(
        str(masters / "sneaker-red-front.jpg"), Q=92)
    add("sneaker-red/front", "sneaker-red-front.jpg", "SNEAKER-RED", 0, "product")
    _to_image(product_shot(2400, 1600, (40, 70, 200), shape="box")).jpegsave(
        str(masters / "sneaker-red-side.jpg"), Q=92)
    add("sneaker-red/side", "sneaker-red-side.jpg", "SNEAKER-RED", 1, "product")

    # A transparent cut-out: the product with nothing around it.
    body = _ellipse(1600, 1600, 800, 800, 520, 380) * 255
    rgb = product_shot(1600, 1600, (30, 160, 90))
    cutout = _to_image(np.dstack([rgb, body])).copy(interpretation="srgb")
    cutout.pngsave(str(masters / "bag-green.png"))
    add("bag-green", "bag-green.png", "BAG-GREEN", 0, "product")

    # Print-ready CMYK with its profile embedded, as agencies deliver.
    cmyk = _to_image(product_shot(1600, 1600, (230, 180, 20))).icc_transform("cmyk")
    cmyk.jpegsave(str(masters / "lamp-yellow-cmyk.jpg"), Q=92, keep="icc")
    add("lamp-yellow", "lamp-yellow-cmyk.jpg", "LAMP-YELLOW", 0, "product")

    # A phone photo: pixels stored sideways, EXIF orientation 6 says "rotate 90 clockwise".
    upright = _to_image(product_shot(1200, 1600, (120, 60, 160)))
    sideways = upright.rot270().copy()
    sideways.set_type(pyvips.GValue.gint_type, "orientation", 6)
    sideways.jpegsave(str(masters / "mug-purple-phone.jpg"), Q=90, keep="exif")
    add("mug-purple", "mug-purple-phone.jpg", "MUG-PURPLE", 0, "product")

    _to_image(lifestyle_scene(3000, 2000)).jpegsave(str(masters / "summer-campaign.jpg"), Q=88)
    add("campaign/summer", "summer-campaign.jpg", "campaign-summer", 0, "editorial")

    # A short product video (with sound): every channel's video outputs and posters come from it.
    product_video(masters / "sneaker-red-spin.mp4", 640, 360, seconds=1.5, flashes=(0.75,),
                  noise=3.0)
    add("sneaker-red/spin", "sneaker-red-spin.mp4", "SNEAKER-RED", 9, "product")

    listing = folder / "catalog.csv"
    with listing.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "path", "product", "position", "role",
                                                 "alt", "title"])
        writer.writeheader()
        writer.writerows(rows)
    return listing
