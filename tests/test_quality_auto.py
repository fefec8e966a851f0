"""mozjpeg by default, quality = "auto" (SSIMULACRA2 search), the `score` column, and byte
budgets that ordinary photos meet (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load, read, write_config
from photo_like import noise, photo

from engine import api
from engine.errors import MasterError
from engine.image import encode as enc
from engine.image.render import render_all
from engine.image.ssimulacra2 import Reference
from engine.rows import SCHEMA
from engine.spec import load_config
from engine.spec.models import (
    ENCODER_SETTINGS,
    MATCH_SLACK,
    TARGETS,
    ImagePreset,
    Resize,
    recipe_hash,
)


def preset(**kw: object) -> ImagePreset:
    return ImagePreset(**{"resize": Resize(width=400), "format": "jpeg", **kw})


def flat_product(width: int, height: int):
    from engine.demo import _to_image, product_shot

    return _to_image(product_shot(width, height, (200, 40, 60), "box"))


def decoded(data: bytes):  # noqa: ANN201
    import pyvips

    return pyvips.Image.new_from_buffer(data, "")


# -- mozjpeg -----------------------------------------------------------------------------------

def test_jpeg_uses_mozjpeg_and_is_smaller_than_plain_libjpeg_at_the_same_setting():
    image = photo(480, 640, seed=5)
    data, quality = enc.encode(image, preset(quality=75))
    plain = image.jpegsave_buffer(Q=75, optimize_coding=True, interlace=True, keep="none")
    assert quality == 75 and len(data) < 0.9 * len(plain)
    assert "trellis_quant=1" in enc.describe(preset(quality=75), 75)
    # baseline stays baseline (optimize_scans is a progressive option)
    base = preset(quality=75, progressive=False)
    assert "optimize_scans" not in enc.describe(base, 75)
    progressive = decoded(enc.encode(image, preset(quality=75))[0])
    assert progressive.get_typeof("interlaced") and not decoded(
        enc.encode(image, base)[0]).get_typeof("interlaced")


def test_encoder_settings_are_in_their_formats_recipe_hashes_only():
    jpeg, webp = preset(quality=80), preset(quality=80, format="webp")
    assert jpeg.recipe()["encoder_settings"] == ENCODER_SETTINGS["jpeg"]
    assert preset(quality=50, format="avif").recipe()["encoder_settings"]
    assert "encoder_settings" not in webp.recipe()
    assert "target" not in jpeg.recipe()  # a fixed quality's recipe is as before
    auto = [recipe_hash(preset(quality="auto", target=t), "e") for t in ("good", "eco", 75)]
    assert len(set(auto + [recipe_hash(jpeg, "e")])) == 4


def avif_q50_effort1(image) -> bytes:
    return image.heifsave_buffer(Q=50, compression="av1", effort=1, bitdepth=8,
                                 subsample_mode="off", keep="none")


def test_avif_is_encoded_at_effort_3_and_matched_against_effort_1():
    # effort 3 (AVIF's default) reaches a score in fewer bytes than effort 1; a matched target
    # is still effort 1's conventional encode (sharp's default scores near it), so "auto" writes
    # a smaller file than at effort 1 that looks as good as that conventional file, within the
    # slack (a proxy-searched one keeping its reserve)
    avif = preset(format="avif", quality="auto", match_quality=50)
    assert "effort=3" in enc.describe(avif, 50)
    assert "effort=1" in enc.describe(avif.model_copy(update={"effort": 1}), 50)
    for image in (flat_product(320, 213), flat_product(640, 427)):
        ref = Reference(image)
        done = enc.save(image, avif)
        at_effort_1 = enc.save(image, avif.model_copy(update={"effort": 1}))
        assert len(done.data) < 0.9 * len(at_effort_1.data)
        conventional = ref.score(decoded(avif_q50_effort1(image)))
        assert ref.score(decoded(done.data)) >= conventional - MATCH_SLACK - enc.PROXY_MATCH_RESERVE


def test_a_matched_avif_target_is_measured_at_effort_1_not_by_the_search():
    image = flat_product(320, 213)
    ref = Reference(image)

    def search_step(q: int) -> float:
        raise AssertionError("the anchor is not a search step at another effort")

    avif = preset(format="avif", quality="auto", match_quality=50)
    target = enc._target(avif, image, ref, search_step)
    assert target.search_step is None
    assert target.anchor_score == pytest.approx(ref.score(decoded(avif_q50_effort1(image))))
    assert target.score == pytest.approx(target.anchor_score - MATCH_SLACK)
    # at effort 1 itself the anchor is the search's own first step
    steps = []
    same = enc._target(avif.model_copy(update={"effort": 1}), image, ref,
                       lambda q: steps.append(q) or 80.0)
    assert steps == [50] and same.search_step == 50 and same.anchor_score == 80.0


# -- the search --------------------------------------------------------------------------------

def test_search_finds_the_smallest_passing_quality_in_few_tries():
    for threshold in (31, 47, 62, 88, 95):
        calls = []

        def score(q: int, threshold: int = threshold) -> float:
            calls.append(q)
            return 80.0 + 0.6 * (q - threshold)  # passes 80 from `threshold` up

        q, s = enc.search(score, 80.0, 30, 95, 70, 0.6)
        assert q == threshold and s >= 80 and len(calls) <= enc.MAX_SEARCH


def test_search_returns_the_top_when_nothing_reaches_the_target():
    q, s = enc.search(lambda q: q / 2, 99.0, 30, 95, 70, 0.6)
    assert q == 95 and s < 99


def test_proxy_is_full_scale_tiles_of_the_image():
    image = photo(1100, 900, seed=2)
    small = enc.proxy(image)
    assert (small.width, small.height) == (2 * enc.PROXY_TILE, 2 * enc.PROXY_TILE)
    t = enc.PROXY_TILE
    tile = small.crop(0, 0, t, t)
    found = [(x, y) for y in range(0, 900 - t + 1, t) for x in range(0, 1100 - t + 1, t)
             if (image.crop(x, y, t, t) == tile).min() == 255]
    assert len(found) == 1  # an exact crop on the tile grid, not a resized copy
    assert enc.proxy(photo(400, 300)) is None  # small: searched whole


def test_proxy_of_a_product_on_white_leaves_the_blank_margins_out():
    image = flat_product(1600, 1200)
    t = enc.PROXY_TILE
    blank = sum((image.crop(x, y, t, t).deviate() == 0) for y in range(0, 1200 - t + 1, t)
                for x in range(0, 1600 - t + 1, t))
    assert blank >= 12  # most of the tile grid is plain white
    small = enc.proxy(image)
    assert small.width == small.height == 3 * t  # over 1.2 MP: the wider 3x3 sample
    tiles = [small.crop(x, y, t, t) for y in range(0, 3 * t, t) for x in range(0, 3 * t, t)]
    assert all(tile.deviate() > 0 for tile in tiles)  # every tile shows product or shadow


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_auto_meets_the_target_with_the_smallest_quality(fmt):
    image = photo(400, 300, seed=7)
    p = preset(format=fmt, quality="auto", target="good")
    done = enc.save(image, p)
    ref = Reference(image)
    score = ref.score(decoded(done.data))
    assert score == pytest.approx(done.score, abs=0.01)
    assert score >= TARGETS["good"]
    lower = max(1, done.quality - 3)  # a few steps lower misses the target: no waste
    saver = enc._saver(p, image.width * image.height)
    assert ref.score(decoded(saver(image, lower))) < TARGETS["good"]


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
@pytest.mark.parametrize("kind", ["photo", "flat"])
def test_match_quality_looks_as_good_as_the_conventional_encode_in_fewer_bytes(fmt, kind):
    # a photo-like image, and a flat product shot (where a conventional q80 scores far above
    # the named "good" target of 80: a fixed target would fall short of it)
    image = photo(400, 300, seed=12) if kind == "photo" else flat_product(400, 300)
    p = preset(format=fmt, quality="auto", match_quality=80)
    done = enc.save(image, p)
    ref = Reference(image)
    plain = (image.jpegsave_buffer(Q=80, optimize_coding=True, interlace=True, keep="none")
             if fmt == "jpeg" else image.webpsave_buffer(Q=80, keep="none"))
    anchor = ref.score(decoded(plain))
    score = ref.score(decoded(done.data))
    assert score == pytest.approx(done.score, abs=0.01)
    assert score >= anchor - MATCH_SLACK  # as good, within the slack
    # never more bytes; JPEG's are fewer (mozjpeg's settings); WebP's where its score allows
    assert len(done.data) < len(plain) if fmt == "jpeg" else len(done.data) <= len(plain)
    assert "match=80" in enc.describe(p, done.quality)
    # a few steps lower misses it: no waste
    lower = enc._saver(p, image.width * image.height)(image, max(1, done.quality - 3))
    assert ref.score(decoded(lower)) < anchor - MATCH_SLACK


def test_proxy_keeps_a_smooth_gradient_where_encoders_band():
    # a box whose colour fades top to bottom, on white: no local detail inside the box, but
    # a gradient is where a low quality bands, so it must be in the sample
    import numpy as np
    import pyvips

    rgb = np.full((1200, 1600, 3), 255, np.uint8)
    fade = np.linspace(230, 150, 800).astype(np.uint8)[:, None]
    rgb[200:1000, 300:1300] = np.dstack([fade, fade * 0 + 180, fade * 0 + 40])
    image = pyvips.Image.new_from_array(rgb, interpretation="srgb")
    t = enc.PROXY_TILE
    small = enc.proxy(image).numpy()
    tiles = [small[y: y + t, x: x + t] for y in range(0, small.shape[0], t)
             for x in range(0, small.shape[1], t)]
    inside = [a for a in tiles if (a == a[:, :1]).all() and a.std() > 0.5]
    assert inside  # at least one tile of pure gradient (rows constant, levels spread)
    assert all(a.std() > 0 for a in tiles)  # and no plain white tile


def test_one_master_searched_in_several_formats_keeps_each_formats_proxy():
    # over 1.2 MP: JPEG searches a 3x3 proxy, WebP and AVIF a 2x2 one; one Scoring holds both
    image = flat_product(1400, 1000)
    scoring = enc.Scoring()
    for fmt, match in (("jpeg", 80), ("avif", 50), ("webp", 80), ("jpeg", 80)):
        done = enc.save(image, preset(format=fmt, quality="auto", match_quality=match),
                        scoring, key="one size")
        assert done.score is None and decoded(done.data).width == 1400  # unscored: > 1.2 MP


def test_a_proxy_choice_far_below_the_match_quality_is_not_trusted(monkeypatch):
    # a WebP proxy of tiles can mispredict libwebp, which segments the whole image first (a
    # smooth gradient's proxy chose Q30 for a file that then scored 4.4 below the Q80 one):
    # more than PROXY_TRUST below match_quality, the file is the conventional quality's
    image = photo(700, 500, seed=2)  # over PROXY_MAX_PIXELS: searched on a proxy
    webp = preset(format="webp", quality="auto", match_quality=80)
    lowest = 80 - enc.PROXY_TRUST  # the lowest quality trusted
    for chosen, written in ((lowest - 1, 80), (lowest, lowest)):
        monkeypatch.setattr(enc, "search", lambda *a, chosen=chosen, **k: (chosen, 99.0))
        done = enc.save(image, webp)
        assert done.quality == written
        assert done.data == image.webpsave_buffer(Q=written, effort=4, keep="none")


def test_an_identical_rendition_under_another_recipe_is_encoded_once(monkeypatch):
    # a 480 px master: the 640 and 828 "limit" renditions are its own 480 px, pixel for pixel;
    # the same format and settings make the same file, searched once. A different target, or
    # other pixels (a 320 px rendition), is its own encode.
    encodes: list[tuple[int, int]] = []
    saver = enc._saver

    def counting(p: ImagePreset, effort: int | None = None):  # noqa: ANN202
        inner = saver(p, effort)

        def encode(image, q: int) -> bytes:  # noqa: ANN001
            encodes.append((image.width, q))
            return inner(image, q)
        return encode

    monkeypatch.setattr(enc, "_saver", counting)
    master = photo(480, 320, seed=21).jpegsave_buffer(Q=95)
    auto = {"format": "webp", "quality": "auto", "match_quality": 80}
    presets = {"w640": preset(resize=Resize(width=640, fit="limit"), **auto),
               "w828": preset(resize=Resize(width=828, fit="limit"), **auto)}
    render_all(master, {"w640": presets["w640"]})
    one = len(encodes)
    results, _ = render_all(master, presets)
    assert len(encodes) == 2 * one, "the second rendition costs no encode"
    assert results["w640"].data == results["w828"].data
    assert results["w640"].score == results["w828"].score
    assert all(width == 480 for width, _ in encodes)
    before = len(encodes)
    results, _ = render_all(master, presets | {
        "w320": preset(resize=Resize(width=320, fit="limit"), **auto),
        "eco": preset(resize=Resize(width=900, fit="limit"), **auto, target="eco")})
    assert results["w320"].width == 320 and results["eco"].width == 480
    widths = [width for width, _ in encodes[before:]]
    assert widths.count(320) >= 1 and widths.count(480) > one, "each is its own encode"
    assert results["eco"].score >= TARGETS["eco"]


def test_match_quality_with_a_target_takes_the_higher_of_the_two():
    image = photo(400, 300, seed=12)
    ref = Reference(image)
    anchor = ref.score(decoded(image.jpegsave_buffer(Q=60, keep="none")))
    assert anchor < 75  # the image is busy enough that q60 scores under the floor
    done = enc.save(image, preset(quality="auto", match_quality=60, target=75))
    assert done.score >= 75
    matched = enc.save(image, preset(quality="auto", match_quality=60))
    assert anchor - MATCH_SLACK <= matched.score < 75 and len(matched.data) < len(done.data)
    assert preset(quality="auto", match_quality=60).target_score is None
    hashes = {recipe_hash(preset(quality="auto", **kw), "e") for kw in (
        {"match_quality": 60}, {"match_quality": 80}, {"match_quality": 60, "target": 75}, {})}
    assert len(hashes) == 4


def test_a_higher_target_costs_more_bytes_and_scores_higher():
    image = photo(400, 300, seed=8, grain=1.0, beta=2.8)
    eco = enc.save(image, preset(quality="auto", target="eco"))
    high = enc.save(image, preset(quality="auto", target="high"))
    assert eco.score >= TARGETS["eco"] and high.score >= TARGETS["high"]
    assert len(eco.data) < len(high.data) and eco.quality < high.quality


@pytest.mark.slow
def test_a_large_image_is_searched_on_its_proxy_and_scored_whole():
    image = photo(900, 700, seed=9)
    done = enc.save(image, preset(quality="auto", target=75))
    score = Reference(image).score(decoded(done.data))
    assert score == pytest.approx(done.score, abs=0.01)
    assert score >= 75 - enc.PROXY_SLACK


def test_with_a_budget_the_budget_wins_and_the_best_score_that_fits_is_taken():
    image = photo(400, 300, seed=3)
    free = enc.save(image, preset(quality="auto", target="good"))
    budget = len(free.data) // 2
    done = enc.save(image, preset(quality="auto", target="good", max_bytes=budget))
    assert len(done.data) <= budget and done.quality < free.quality
    assert done.score < free.score
    above = enc._saver(preset(), image.width * image.height)(image, done.quality + 1)
    assert len(above) > budget  # one step up no longer fits: the best that fits


# -- presets and the manifest -------------------------------------------------------------------

def test_auto_validation_names_key_expected_and_found():
    with pytest.raises(ValueError, match="quality: expected a number for format = 'png'"):
        preset(format="png", quality="auto")
    with pytest.raises(ValueError, match="target: expected no target unless quality = 'auto'"):
        preset(quality=80, target="eco")
    with pytest.raises(ValueError, match="match_quality: expected no match_quality unless"):
        preset(quality=80, match_quality=80)
    with pytest.raises(ValueError):
        preset(quality="auto", target="best")
    with pytest.raises(ValueError):
        preset(quality="auto", target=101)


def test_built_in_presets_use_auto_except_amazon():
    presets = load_config().presets
    assert presets["amazon-white-square-2000"].quality == 90
    for name in ("email-600", "email-1200", "web-gallery-640-avif", "mobile-640-webp",
                 "web-zoom-2048-jpeg"):
        assert presets[name].auto, name


def test_manifest_score_is_the_written_files_score(tmp_path: Path):
    (tmp_path / "in").mkdir()
    photo(400, 300, seed=11).jpegsave(str(tmp_path / "in" / "p.jpg"), Q=95)
    write_config(tmp_path / "cfg", "presets", "p", """
[auto-jpeg]
resize = { width = 320 }
format = "jpeg"
quality = "auto"
[auto-webp]
resize = { width = 320 }
format = "webp"
quality = "auto"
target = "eco"
[fixed-jpeg]
resize = { width = 320 }
format = "jpeg"
quality = 80
""")
    write_config(tmp_path / "cfg", "channels", "c", """
name = "c"
[[outputs]]
name = "a"
preset = "auto-jpeg"
[[outputs]]
name = "w"
preset = "auto-webp"
[[outputs]]
name = "f"
preset = "fixed-jpeg"
""")
    result = api.render(tmp_path / "in", tmp_path / "out", config_dir=tmp_path / "cfg",
                        channels=["c"])
    assert not result.failed
    assert str(SCHEMA.field("score").type) == "double"
    rows = {r["output"]: r for r in read(tmp_path / "out").to_pylist()}
    reference = render_all((tmp_path / "in" / "p.jpg").read_bytes(), {"ref": preset(
        resize=Resize(width=320), format="png")})[0]["ref"]
    ref = Reference(decoded(reference.data))
    for name, target in (("a", TARGETS["good"]), ("w", TARGETS["eco"])):
        row = rows[name]
        written = load(tmp_path / "out" / row["path"])
        assert row["score"] == pytest.approx(ref.score(written), abs=0.05)
        assert row["score"] >= target and 30 <= row["quality"] <= 95
        assert f"auto={target:g}" in row["encoder"]
    assert rows["f"]["score"] is None and rows["f"]["quality"] == 80


@pytest.mark.slow
def test_reference_implementation_agrees_with_the_manifest_score(tmp_path: Path):
    oracle = pytest.importorskip("ssimulacra2")
    image = photo(480, 360, seed=12)
    done = enc.save(image, preset(quality="auto", target="good", format="webp"))
    image.pngsave(str(tmp_path / "ref.png"))
    decoded(done.data).pngsave(str(tmp_path / "out.png"))
    value = float(oracle.compute_ssimulacra2(str(tmp_path / "ref.png"), str(tmp_path / "out.png")))
    assert value == pytest.approx(done.score, abs=1.5)


# -- email budgets -----------------------------------------------------------------------------

def _email(image, name: str):  # noqa: ANN001, ANN202
    p = load_config().presets[name]
    out = render_all(image.jpegsave_buffer(Q=95), {name: p})[0][name]
    return p, out


@pytest.mark.slow
def test_an_ordinary_photo_meets_the_email_600_budget():
    p, out = _email(photo(1200, 1600, seed=1), "email-600")
    assert not isinstance(out, MasterError), out
    assert len(out.data) <= p.max_bytes and out.width == 600
    assert out.quality >= 50 and out.score >= 50  # mozjpeg fits it at a medium quality or better


@pytest.mark.slow
@pytest.mark.parametrize("seed,beta", [(1, 2.4), (2, 2.2), (3, 2.6), (4, 2.3), (5, 2.8)])
@pytest.mark.parametrize("name", ["email-600", "email-1200"])
def test_ordinary_photos_meet_the_email_budgets(seed, beta, name):
    for width, height in ((1200, 1600), (1600, 1200)):
        p, out = _email(photo(width, height, seed=seed, beta=beta), name)
        assert not isinstance(out, MasterError), out
        assert len(out.data) <= p.max_bytes
        assert out.quality >= p.min_quality
        assert out.score is None or out.score >= 40  # a binding budget is always scored


@pytest.mark.slow
def test_a_noise_image_may_fail_the_budget_with_the_numbers():
    p, out = _email(noise(1200, 1600), "email-600")
    if isinstance(out, MasterError):
        assert f"cannot fit {p.max_bytes} bytes" in str(out) and "minimum quality" in str(out)
    else:
        assert len(out.data) <= p.max_bytes
