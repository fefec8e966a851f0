"""Photo-like images made in code, for byte-budget and quality tests.

The demo's masters are smooth gradients and flat products, which every encoder squeezes into
a few kilobytes; a byte budget is only tested by content with a photo's statistics: a
1/f amplitude spectrum (detail at every scale, as in natural images), hard object edges, and
sensor grain. `noise` is the pathological case: white noise no encoder can compress.
"""

from __future__ import annotations

import numpy as np
import pyvips


def _pink(rng: np.random.Generator, width: int, height: int, beta: float) -> np.ndarray:
    """A 1/f^beta field (natural images have beta near 2 in power), scaled to mean 0, sd 1."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** (beta / 2)
    spectrum[0, 0] = 0
    field = np.fft.irfft2(spectrum, s=(height, width))
    return (field - field.mean()) / field.std()


def photo(width: int = 1200, height: int = 1600, seed: int = 0, grain: float = 3.0,
          beta: float = 2.4) -> pyvips.Image:
    """An 8-bit sRGB photo-like image: textured background, a few objects, grain. At the
    defaults a 1200x1600 one is about 165 KB as a libjpeg-turbo Q40 JPEG, like an ordinary
    portrait photo (a larger beta is smoother: fewer bytes)."""
    rng = np.random.default_rng(seed)
    luma = _pink(rng, width, height, beta)
    tint = [_pink(rng, width, height, beta + 0.6) for _ in range(2)]
    base = rng.uniform(70, 170, size=3)
    rgb = np.stack([base[c] + 38 * luma + 14 * tint[c % 2] * (1 if c else -1) for c in range(3)],
                   axis=-1)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(4):  # objects with hard edges and their own texture
        cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
        rx, ry = rng.uniform(0.08, 0.25) * width, rng.uniform(0.08, 0.25) * height
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        colour = rng.uniform(20, 235, size=3)
        shade = 1 - 0.35 * (yy - cy) / ry  # lit from above
        for c in range(3):
            rgb[..., c] = np.where(inside, colour[c] * shade + 10 * luma, rgb[..., c])
    # sensor grain after a camera's processing: mostly luma, a little chroma
    rgb += rng.normal(0, grain, size=rgb.shape[:2])[..., None]
    rgb += rng.normal(0, grain / 4, size=rgb.shape)
    return _image(rgb)


def noise(width: int = 1200, height: int = 1600, seed: int = 0) -> pyvips.Image:
    """White noise: incompressible, the image no ordinary byte budget is meant for."""
    rng = np.random.default_rng(seed)
    return _image(rng.uniform(0, 255, size=(height, width, 3)))


def _image(rgb: np.ndarray) -> pyvips.Image:
    data = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))
    h, w, _ = data.shape
    return pyvips.Image.new_from_memory(data.tobytes(), w, h, 3, "uchar").copy(
        interpretation="srgb")
