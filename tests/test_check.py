"""`fanout check` and the rules at render time: broken files are caught, by the rule they break."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import problem_images as P
import pytest
import pyvips
from click.testing import CliRunner
from helpers import read

from benchmarks.bytes import fixed_config
from engine import api, manifest
from engine.checks import PathSet
from engine.cli import main
from engine.demo import _to_image, product_shot
from engine.store import Store


@pytest.fixture(scope="module")
def rendered_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check")
    masters = root / "masters"
    masters.mkdir()
    _to_image(product_shot(900, 900, (200, 40, 40))).jpegsave(str(masters / "shoe.jpg"))
    P.scene().jpegsave(str(masters / "scene.jpg"))
    out = root / "out"
    # at fixed qualities (the rules do not depend on how a quality was found): 6.4 s -> 3 s
    fixed = fixed_config(root / "config")
    assert api.render(masters, out, channels=["amazon", "email", "web"],
                      config_dir=fixed).exit_code == 0
    return out


@pytest.fixture()
def rendered(rendered_once: Path, tmp_path: Path) -> Path:
    """A copy of one render per test (tests damage it); the manifest's paths are relative."""
    return Path(shutil.copytree(rendered_once, tmp_path / "out", symlinks=True))


def problems_by_path(out: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path, problem in api.check(out).problems:
        found.setdefault(path, []).append(problem)
    return found


def test_a_fresh_render_passes_check(rendered):
    result = CliRunner().invoke(main, ["check", str(rendered)])
    assert result.exit_code == 0, result.output
    assert "0 with problems" in result.output


def test_check_catches_resized_recompressed_garbage_missing_and_foreign(rendered):
    out = rendered
    pyvips.Image.new_from_file(str(out / "amazon/shoe.MAIN.jpg")).resize(0.4).jpegsave(
        str(out / "amazon/shoe.MAIN.jpg"))
    email = out / "email/scene/w600.jpg"
    pyvips.Image.new_from_file(str(email)).jpegsave(str(email), Q=20)
    (out / "web/shoe/zoom-webp.webp").write_bytes(b"not an image at all")
    (out / "web/shoe/thumb-jpeg.jpg").unlink()
    shutil.copy(email, out / "email/scene/extra.jpg")
    found = problems_by_path(out)
    amazon = " ".join(found["amazon/shoe.MAIN.jpg"])
    assert "size: expected 2000x2000, found 800x800" in amazon
    assert "min_long_side" in amazon
    assert any(p.startswith("sha256") for p in found["email/scene/w600.jpg"])
    assert any(p.startswith("decode") for p in found["web/shoe/zoom-webp.webp"])
    assert any(p.startswith("missing") for p in found["web/shoe/thumb-jpeg.jpg"])
    assert len(found) == 4
    assert api.check(out).foreign == ["email/scene/extra.jpg"]  # not fanout's: listed, left
    result = CliRunner().invoke(main, ["check", str(out)])
    assert result.exit_code == 1 and "email/scene/extra.jpg" in result.output


def test_check_applies_per_output_aspect_rules(tmp_path):
    masters = tmp_path / "masters"
    masters.mkdir()
    P.scene().jpegsave(str(masters / "scene.jpg"))
    out = tmp_path / "out"
    assert api.render(masters, out, channels=["instagram"]).exit_code == 0
    story = out / "instagram/scene/product-story.jpg"
    pyvips.Image.new_from_file(str(story)).crop(0, 0, 1080, 1080).jpegsave(str(story))
    problems = " ".join(problems_by_path(out)["instagram/scene/product-story.jpg"])
    assert "max_aspect: expected <= 0.5625, found 1.000" in problems
    assert "preset ig-product-story makes 1080x1920" in problems


def test_check_applies_amazon_background_and_fill_rules(rendered):
    path = rendered / "amazon/shoe.MAIN.jpg"
    image = pyvips.Image.new_from_file(str(path))
    small = image.resize(0.5).embed(500, 500, 2000, 2000, extend="white")
    small.draw_rect([250, 250, 250], 0, 0, 2000, 3, fill=True).jpegsave(str(path), Q=90)
    problems = " ".join(problems_by_path(rendered)["amazon/shoe.MAIN.jpg"])
    assert "min_fill" in problems and "background" in problems


def test_a_derivative_breaking_its_channel_rules_fails_at_render_time(tmp_path):
    cfg = tmp_path / "cfg"
    (cfg / "presets").mkdir(parents=True)
    (cfg / "channels").mkdir()
    (cfg / "presets" / "p.toml").write_text(  # no trim: the master's own margins stay
        '[loose]\nresize = { width = 1200, height = 1200, fit = "pad", fill_ratio = 0.9 }\n'
        'format = "jpeg"\n')
    (cfg / "channels" / "market.toml").write_text(
        'name = "market"\n[[outputs]]\nname = "main"\npreset = "loose"\n'
        '[rules]\nbackground = "#ffffff"\nmin_fill = 0.85\n')
    masters = tmp_path / "masters"
    masters.mkdir()
    _to_image(product_shot(900, 900, (200, 40, 40))).jpegsave(str(masters / "shoe.jpg"))
    out = tmp_path / "out"
    result = api.render(masters, out, channels=["market"], config_dir=cfg)
    (row,) = read(out).to_pylist()
    assert result.exit_code == 1 and row["status"] == "failed"
    assert row["error"].startswith("breaks market rules: min_fill")
    assert not (out / "market").exists(), "a derivative that breaks the rules is not published"


def _canvas(colour: list[int], size: int = 100, bands: int = 3) -> pyvips.Image:
    image = (pyvips.Image.black(size, size, bands=bands) + colour).cast("uchar")
    return image.copy(interpretation="srgb")


def test_pixel_rules_see_one_off_pixel_on_an_edge_and_measure_fill_on_any_background():
    from engine.rules import pixel_violations
    from engine.spec.models import Rules

    white = Rules(background="#ffffff", min_fill=0.5)
    product = _canvas([255, 255, 255]).draw_rect([40, 60, 200], 20, 30, 60, 40, fill=True)
    assert pixel_violations(white, product) == []  # spans 60 of 100
    nicked = product.draw_rect([255, 255, 254], 99, 50, 1, 1, fill=True)
    assert pixel_violations(white, nicked) == [
        "background: expected a #ffffff border, found pixels off by up to 1"]
    small = _canvas([255, 255, 255]).draw_rect([40, 60, 200], 45, 45, 10, 40, fill=True)
    assert pixel_violations(white, small)[0].startswith("min_fill") and "40.0%" in \
        pixel_violations(white, small)[0]
    # A mid-grey background: content is what differs by more than 16 above or below it.
    grey = Rules(background="#808080", min_fill=0.5)
    faint = _canvas([128, 128, 128]).draw_rect([140, 128, 128], 10, 10, 80, 80, fill=True)
    assert "found 0.0%" in pixel_violations(grey, faint)[0]  # 12 off: still background
    darker = _canvas([128, 128, 128]).draw_rect([128, 100, 128], 10, 10, 80, 80, fill=True)
    assert pixel_violations(grey, darker) == []


def test_pixel_rules_on_alpha_count_transparent_pixels_as_background():
    from engine.rules import pixel_violations
    from engine.spec.models import Rules

    image = _canvas([0, 0, 0, 0], bands=4).draw_rect([200, 30, 30, 255], 5, 5, 90, 20, fill=True)
    assert pixel_violations(Rules(min_fill=0.85), image) == []  # 90 wide on transparent
    assert "found 0.0%" in pixel_violations(Rules(min_fill=0.85), _canvas([0, 0, 0, 0], bands=4))[0]


def test_check_tells_foreign_files_from_an_interrupted_runs_across_batches(rendered, monkeypatch):
    """Check looks the files under OUT up in its claims a batch at a time (PathSet, not a set
    of every path): foreign files in several folders are listed, a file an interrupted run's
    journal names is a problem, fanout's own files are neither, whatever the batch size."""
    monkeypatch.setattr(api, "CHECK_BATCH", 3)
    out = rendered
    foreign = ["email/scene/extra.jpg", "web/notes.txt", "amazon/é ü/x.jpg"]
    for path in foreign:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(b"someone else's")
    (out / "web/shoe/half-written.webp").write_bytes(b"cut short")
    manifest.write_journal(Store(out), "20261129T000000Z-dead", ["web/shoe/half-written.webp"],
                           [])
    result = api.check(out)
    assert result.foreign == sorted(foreign)
    assert result.problems == [("web/shoe/half-written.webp", "unrecorded: written by an "
                                "interrupted run; the next render removes it")]
    assert result.checked == len(read(out))


def test_path_set_membership_is_exact_when_first_hashes_collide(monkeypatch):
    paths = PathSet()
    assert paths.missing(["a"]) == ["a"]
    paths.update(["a", "b/c", "é/ü"])
    paths.update(iter(["d"]))
    assert paths.missing(["a", "x", "é/ü", "d", "b/c/"]) == ["x", "b/c/"]
    # every path's first hash the same: membership rests on the second one along the run
    def pairs(batch):
        return np.array([(7, hash(p)) for p in batch], np.int64).reshape(-1, 2)

    monkeypatch.setattr(PathSet, "_pairs", staticmethod(pairs))
    colliding = PathSet()
    colliding.update(["a", "b", "c"])
    assert colliding.missing(["c", "z", "a", "y"]) == ["z", "y"]
