"""engine/image/ssimulacra2.py against the `ssimulacra2` package (a Python port of libjxl's
SSIMULACRA2), the oracle: the same score within 1.0 point (in practice within a few
thousandths) on photos, graphics, text, alpha, grey, small and large images, compressed by
JPEG, WebP and AVIF at several qualities."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import pyvips
from photo_like import photo
from ssimulacra2 import ssimulacra2 as oracle_module

from engine.image import ssimulacra2

AGREEMENT = 1.0  # points, the bar; the largest difference measured is 0.004


class _Arrays:
    """Stands in for PIL.Image inside the oracle: open(name).convert("RGB") gives the float
    array stored under that name, so the oracle runs its own code on exact pixel values."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def open(self, name: str) -> _Arrays._Opened:
        return _Arrays._Opened(self.arrays[name])

    class _Opened:
        def __init__(self, array: np.ndarray) -> None:
            self.array = array

        def convert(self, mode: str) -> np.ndarray:
            assert mode == "RGB"
            return self.array


def _rgb(image: pyvips.Image, bg: float) -> np.ndarray:
    """Float RGB 0..255; grey spread to three bands, alpha blended onto `bg` (0..1) in
    gamma-encoded sRGB, as libjxl's ssimulacra2 tool does before scoring."""
    a = image.numpy().astype(np.float64).reshape(image.height, image.width, image.bands)
    alpha = None
    if image.hasalpha():
        a, alpha = a[..., :-1], a[..., -1:] / 255
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if alpha is not None:
        a = a * alpha + (1 - alpha) * bg * 255
    return a


def oracle(reference: pyvips.Image, distorted: pyvips.Image) -> float:
    """The oracle's score, with alpha handled as libjxl's tool does (the port itself drops
    alpha): blended onto 0.1 and 0.9 grey, the worse score, when the reference has alpha."""
    backgrounds = (0.1, 0.9) if reference.hasalpha() else (0.5,)
    scores = []
    for bg in backgrounds:
        arrays = {"ref": _rgb(reference, bg), "dist": _rgb(distorted, bg)}
        with mock.patch.object(oracle_module, "Image", _Arrays(arrays)):
            scores.append(oracle_module.compute_ssimulacra2("ref", "dist"))
    return min(scores)


def encoded(image: pyvips.Image, suffix: str, q: int) -> pyvips.Image:
    """`image` after a round trip through a lossy encoder, decoded to memory."""
    data = image.write_to_buffer(suffix, Q=q)
    return pyvips.Image.new_from_buffer(data, "").copy_memory()


def graphics(width: int, height: int) -> pyvips.Image:
    """Flat colours and hard edges: a banner, boxes and a disc."""
    img = (pyvips.Image.black(width, height, bands=3) + [240, 236, 228]).cast("uchar")
    img = img.draw_rect([200, 30, 40], 0, 0, width, height // 5, fill=True)
    img = img.draw_rect([20, 90, 180], width // 8, height // 3, width // 3, height // 3,
                        fill=True)
    img = img.draw_circle([250, 200, 20], width * 2 // 3, height * 2 // 3, min(width, height) // 5,
                          fill=True)
    return img.copy(interpretation="srgb")


def text(width: int, height: int) -> pyvips.Image:
    """Black text on white, antialiased."""
    mask = pyvips.Image.text("Fewer bytes, same look. 0123456789", width=width - 8, dpi=110)
    ink = mask.embed(4, 4, width, height)
    return (255 - ink).bandjoin([255 - ink, 255 - ink]).cast("uchar").copy(
        interpretation="srgb")


def with_alpha(image: pyvips.Image) -> pyvips.Image:
    """`image` with an alpha ramp (transparent on the left, opaque on the right) and a fully
    transparent band whose colour is garbage."""
    w, h = image.width, image.height
    ramp = (pyvips.Image.xyz(w, h)[0] * (255 / max(w - 1, 1))).cast("uchar")
    ramp = ramp.draw_rect([0], 0, 0, w, h // 6, fill=True)
    return image.bandjoin(ramp).copy(interpretation="srgb")


def assert_agrees(reference: pyvips.Image, distorted: pyvips.Image) -> float:
    ours, theirs = ssimulacra2.score(reference, distorted), oracle(reference, distorted)
    assert abs(ours - theirs) < AGREEMENT, (ours, theirs)
    return ours - theirs


# --- the fast suite: small images, the oracle takes milliseconds on them ---

def test_identical_images_score_100():
    image = photo(96, 80, seed=1)
    assert ssimulacra2.score(image, image) == pytest.approx(100.0, abs=1e-6)


def test_small_photo_agrees_with_the_oracle_at_three_qualities():
    image = photo(120, 90, seed=2)
    scores = []
    for q in (20, 50, 90):
        distorted = encoded(image, ".jpg", q)
        assert_agrees(image, distorted)
        scores.append(ssimulacra2.score(image, distorted))
    assert scores[0] < scores[1] < scores[2] < 100  # more quality, higher score


def test_64x64_reads_the_weights_of_four_scales_as_the_oracle_does():
    image = photo(64, 64, seed=3)
    assert abs(assert_agrees(image, encoded(image, ".webp", 40))) < 0.05


def test_alpha_is_blended_on_dark_and_light_grey_and_the_worse_score_kept():
    image = with_alpha(photo(96, 72, seed=4))
    distorted = encoded(image, ".webp", 50)
    assert distorted.hasalpha()
    assert_agrees(image, distorted)
    # Colour under alpha 0 is invisible: changing it changes nothing.
    hidden = image.draw_rect([255, 0, 255, 0], 0, 0, image.width, image.height // 6, fill=True)
    assert ssimulacra2.score(image, hidden) == pytest.approx(100.0, abs=1e-6)


def test_files_opened_for_sequential_reading_score_as_in_memory(tmp_path):
    image = with_alpha(photo(90, 70, seed=9))  # alpha: each image is read once per background
    image.pngsave(str(tmp_path / "ref.png"))
    image.webpsave(str(tmp_path / "out.webp"), Q=50)
    opened = [pyvips.Image.new_from_file(str(tmp_path / name), access="sequential")
              for name in ("ref.png", "out.webp")]
    in_memory = pyvips.Image.new_from_file(str(tmp_path / "out.webp")).copy_memory()
    assert ssimulacra2.score(*opened) == ssimulacra2.score(image, in_memory)


def test_grey_scores_as_its_three_band_copy():
    grey = photo(80, 64, seed=5).colourspace("b-w")
    distorted = encoded(grey, ".jpg", 40)
    assert distorted.bands == 1
    as_rgb = ssimulacra2.score(grey.colourspace("srgb"), distorted.colourspace("srgb"))
    assert ssimulacra2.score(grey, distorted) == pytest.approx(as_rgb, abs=1e-6)


def test_reference_scores_many_candidates_as_score_does():
    image = photo(100, 70, seed=6)
    prepared = ssimulacra2.Reference(image)
    for q in (30, 70):
        distorted = encoded(image, ".jpg", q)
        assert prepared.score(distorted) == ssimulacra2.score(image, distorted)


def test_one_shot_score_in_bands_of_rows_is_the_prepared_score_to_the_bit():
    # score() cuts each scale into bands of rows (each blurred with a halo of rows, shared
    # between two threads); smaller chunks and bands than a 2 MP image gets make many bands of
    # small images. Odd sizes exercise the pyramid's edges, alpha the two backgrounds.
    for image in (photo(201, 337, seed=15), with_alpha(photo(200, 331, seed=16))):
        distorted = encoded(image, ".webp", 40)
        with mock.patch.multiple(ssimulacra2, _CHUNK=4096, _BAND_ROWS=40):
            assert len(ssimulacra2._bands(image.height, image.width)) >= 6
            assert len(ssimulacra2._bands(image.height // 2, image.width // 2)) >= 2
            one_shot = ssimulacra2.score(image, distorted)
            assert one_shot == ssimulacra2.Reference(image).score(distorted)
        assert one_shot == pytest.approx(ssimulacra2.score(image, distorted), abs=1e-4)
        assert abs(one_shot - oracle(image, distorted)) < AGREEMENT


def test_a_prepared_reference_scores_on_the_calling_thread_only():
    image = photo(200, 150, seed=17)
    distorted = encoded(image, ".jpg", 50)
    with mock.patch.object(ssimulacra2, "ThreadPoolExecutor", side_effect=AssertionError):
        prepared = ssimulacra2.Reference(image)
        assert 0 < prepared.score(distorted) < 100


def test_negligible_weights_move_a_score_by_hundredths_at_most():
    image = photo(160, 120, seed=7)
    for distorted in (encoded(image, ".jpg", 15), encoded(graphics(160, 120), ".jpg", 50)):
        exact = ssimulacra2.Reference(image, exact=True).score(distorted)
        assert ssimulacra2.score(image, distorted) == pytest.approx(exact, abs=0.02)


@pytest.mark.parametrize("size", [(8, 9), (37, 53), (130, 1100)])
def test_blur_is_the_oracles_kernel_and_borders(size):
    rng = np.random.default_rng(0)
    planes = [rng.random(size, dtype=np.float32) for _ in range(2)]
    for plane, blurred in zip(planes, ssimulacra2._blur(planes)):
        # The oracle's arrays are transposed: (width, height, channels).
        expected = oracle_module.blur_image(plane.T[..., None].astype(np.float64))[..., 0].T
        np.testing.assert_allclose(blurred, expected, atol=1e-6)


def test_images_under_8x8_score_100_and_sizes_must_match():
    tiny = photo(7, 20, seed=8)
    assert ssimulacra2.score(tiny, encoded(tiny, ".jpg", 10)) == 100.0
    with pytest.raises(ValueError, match="one size"):
        ssimulacra2.score(photo(40, 30), photo(30, 40))


# --- the full agreement check: 27 varied images, two of 2 MP (the oracle takes seconds) ---

def _cases() -> list[tuple[str, pyvips.Image, pyvips.Image]]:
    cases = []
    for size, seed in (((640, 480), 10), ((333, 517), 11)):
        image = photo(*size, seed=seed)
        for suffix, q in ((".jpg", 15), (".jpg", 45), (".jpg", 85), (".webp", 30),
                          (".webp", 80), (".avif", 30), (".avif", 65)):
            cases.append((f"photo{size} {suffix} q{q}", image, encoded(image, suffix, q)))
    image = photo(1600, 1250, seed=12)
    cases.append(("photo 2MP jpg q60", image, encoded(image, ".jpg", 60)))
    blurred = image.resize(0.5).resize(2.0)
    cases.append(("photo 2MP halved and doubled", image,
                  blurred.crop(0, 0, image.width, image.height)))
    for name, image in (("graphics", graphics(400, 300)), ("text", text(500, 160)),
                        ("small graphics", graphics(64, 64)), ("photo 97x61", photo(97, 61))):
        cases.append((f"{name} jpg q40", image, encoded(image, ".jpg", 40)))
        cases.append((f"{name} webp q60", image, encoded(image, ".webp", 60)))
    alpha = with_alpha(photo(300, 200, seed=13))
    cases.append(("alpha webp q60", alpha, encoded(alpha, ".webp", 60)))
    cases.append(("alpha avif q40", alpha, encoded(alpha, ".avif", 40)))
    grey = photo(240, 180, seed=14).colourspace("b-w")
    cases.append(("grey jpg q30", grey, encoded(grey, ".jpg", 30)))
    return cases


@pytest.mark.slow
def test_agrees_with_the_oracle_on_varied_images():
    cases = _cases()
    assert len(cases) >= 20
    differences = {name: assert_agrees(ref, dist) for name, ref, dist in cases}
    assert max(abs(d) for d in differences.values()) < AGREEMENT, differences
