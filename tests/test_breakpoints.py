"""Responsive breakpoints: a preset's widths chosen per master by bytes (preset key
`breakpoints`), every candidate a derivative, the ones not chosen recorded n/a."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pyvips
from helpers import assert_consistent, channel_toml, config_folder, load, read

from engine import api
from engine.errors import ConfigError
from engine.spec.models import Breakpoints, ImagePreset

STEP = 6000
PRESETS = f"""
[bp-jpeg]
description = "Gallery, widths chosen by bytes"
resize = {{ fit = "limit" }}
breakpoints = {{ min_width = 160, max_width = 1000, max_count = 5, min_step_bytes = {STEP} }}
format = "jpeg"
quality = 85

[bp-webp]
resize = {{ fit = "limit" }}
breakpoints = {{ min_width = 160, max_width = 1000, max_count = 5, min_step_bytes = {STEP} }}
format = "webp"
"""
CHANNEL = channel_toml("web", {"gallery-jpeg": "bp-jpeg", "gallery-webp": "bp-webp"})


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return config_folder(tmp_path_factory.mktemp("bpconf"), {"bp": PRESETS}, {"web": CHANNEL})


def photo(width: int, height: int) -> pyvips.Image:
    """Detail at every scale (blurred noise over a gradient): bytes grow with the width."""
    noise = pyvips.Image.gaussnoise(width, height, sigma=60, mean=128).gaussblur(1.2)
    x = pyvips.Image.xyz(width, height)
    grad = (x[0] * (160 / width) + 40)
    rgb = (noise * 0.6 + grad * 0.4).bandjoin([noise, grad]).cast("uchar")
    return rgb.copy(interpretation="srgb")


def flat(width: int, height: int) -> pyvips.Image:
    return (pyvips.Image.black(width, height, bands=3) + [30, 90, 200]).cast("uchar").copy(
        interpretation="srgb")


def catalog(tmp_path: Path, **images: pyvips.Image) -> Path:
    folder = tmp_path / "masters"
    folder.mkdir(exist_ok=True)
    for name, image in images.items():
        image.write_to_file(str(folder / f"{name}.jpg"), Q=92)
    return folder


def rows_of(out: Path, master: str, output: str) -> list[dict]:
    return sorted((r for r in read(out).to_pylist()
                   if r["master_id"] == master and r["output"].startswith(f"{output}-")),
                  key=lambda r: int(r["output"].rsplit("-", 1)[1]))


def test_candidate_widths_are_ten_percent_apart_between_the_ends():
    widths = Breakpoints(min_width=320, max_width=2560).widths()
    assert widths[0] == 320 and widths[-1] == 2560
    assert all(b > a for a, b in zip(widths, widths[1:], strict=False))
    assert all(w % 8 == 0 for w in widths[1:-1])
    assert all(b / a <= 1.1 + 8 / a for a, b in zip(widths, widths[1:-1], strict=False))
    assert 20 <= len(widths) <= 25


@pytest.mark.parametrize("resize, problem", [
    ({"width": 800, "height": 600, "fit": "fill"}, "width only"),
    ({"width": 800, "fit": "limit"}, "max_width"),
])
def test_a_breakpoints_preset_resizes_by_width_up_to_max_width(resize, problem):
    with pytest.raises(ValueError, match=problem):
        ImagePreset(format="jpeg", resize=resize,
                    breakpoints={"min_width": 200, "max_width": 1600})
    with pytest.raises(ValueError, match="max_width"):
        Breakpoints(min_width=800, max_width=400)


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory, config_dir: Path) -> Path:
    """One run over a detailed photo, a flat image and a narrow photo, all of product SKU1."""
    root = tmp_path_factory.mktemp("bpnight")
    folder = catalog(root, detail=photo(1000, 750), plain=flat(1000, 750),
                     narrow=photo(500, 375))
    listing = root / "catalog.csv"
    listing.write_text("id,path,product,position,role\n" + "".join(
        f"{m},{folder / m}.jpg,SKU1,{i},product\n"
        for i, m in enumerate(("detail", "plain", "narrow"))))
    out = root / "out"
    assert api.render(listing, out, config_dir=config_dir).exit_code == 0
    return out


@pytest.mark.slow  # the night: three masters' 40 candidates each (~16 s)
def test_widths_are_chosen_per_master_by_bytes(night):
    out = night
    assert_consistent(out)
    for fmt, mime in (("jpeg", "jpeg"), ("webp", "webp")):
        rows = rows_of(out, "detail", f"gallery-{fmt}")
        candidates = Breakpoints(min_width=160, max_width=1000).widths()
        assert [int(r["output"].rsplit("-", 1)[1]) for r in rows] == candidates
        chosen = [r for r in rows if r["status"] == "ok"]
        assert 3 <= len(chosen) <= 5, [r["width"] for r in chosen]  # detail: several steps
        widths = [r["width"] for r in chosen]
        assert widths[0] == 160 and widths[-1] == 1000
        for r in chosen:  # every chosen row names the whole set; the file is what it says
            assert r["breakpoints"] == widths
            image = load(out / r["path"])
            assert (image.width, image.height) == (r["width"], r["width"] * 3 // 4)
            assert image.get("vips-loader").startswith(mime)
        sizes = [r["bytes"] for r in chosen]
        assert all(b - a >= STEP for a, b in zip(sizes, sizes[1:], strict=False)), sizes
        for r in rows:
            if r["status"] != "ok":
                assert r["status"] == "n/a" and r["path"] is None
                assert "not a breakpoint" in r["error"]
                assert ", ".join(map(str, widths)) in r["error"]
    plain = [r for r in rows_of(out, "plain", "gallery-jpeg") if r["status"] == "ok"]
    assert [r["width"] for r in plain] == [1000]  # a flat image: one file serves every width


@pytest.mark.slow  # the night: three masters' 40 candidates each (~16 s)
def test_a_narrow_master_tops_out_at_its_own_width(night):
    rows = rows_of(night, "narrow", "gallery-jpeg")
    chosen = [r for r in rows if r["status"] == "ok"]
    assert chosen[-1]["width"] == 500
    widths = [int(r["output"].rsplit("-", 1)[1]) for r in rows]
    top = next(w for w in widths if w >= 500)  # renders at the master's 500 px
    assert any(r["status"] == "ok" and r["output"] == f"gallery-jpeg-{top}" for r in rows)
    above = [r for r, w in zip(rows, widths, strict=True) if w > top]
    assert above and all(r["status"] == "n/a" and "wider than the master" in r["error"]
                         for r in above)


@pytest.mark.slow  # three renders of one master (~8 s)
def test_a_rerun_keeps_the_choice_and_a_lost_file_remakes_the_set(tmp_path, config_dir):
    out = tmp_path / "out"
    folder = catalog(tmp_path, detail=photo(800, 600))
    api.render(folder, out, config_dir=config_dir)
    first = {r["output"]: r for r in read(out).to_pylist()}
    api.render(folder, out, config_dir=config_dir)
    second = {r["output"]: r for r in read(out).to_pylist()}
    assert {o: r["status"] for o, r in second.items()} == {
        o: ("skipped" if r["status"] == "ok" else r["status"]) for o, r in first.items()}
    lost = next(r for o, r in first.items() if o.startswith("gallery-jpeg-")
                and r["status"] == "ok" and r["width"] < 800)
    (out / lost["path"]).unlink()
    api.render(folder, out, config_dir=config_dir)
    third = {r["output"]: r for r in read(out).to_pylist()}
    assert_consistent(out)
    same_set = [o for o in third if o.startswith("gallery-jpeg-")]
    assert all(third[o]["status"] in ("ok", "n/a") for o in same_set)  # chosen again, whole
    assert all(third[o]["status"] == "skipped" for o in third if o.startswith("gallery-webp-")
               and first[o]["status"] == "ok")
    assert third[lost["output"]]["sha256"] == lost["sha256"]  # the same choice, the same bytes


@pytest.mark.slow  # the night: three masters' 40 candidates each (~16 s)
def test_the_gallery_export_lists_the_chosen_widths(night):
    doc = json.loads(api.gallery(night, "https://cdn.example/", "json"))
    image = doc["products"][0]["images"][0]
    assert image["master_id"] == "detail"
    chosen = [r["width"] for r in rows_of(night, "detail", "gallery-jpeg") if r["status"] == "ok"]
    assert image["srcset"].count("w,") + 1 == len(chosen)
    assert [int(x.split()[-1][:-1]) for x in image["srcset"].split(", ")] == chosen
    assert image["sources"][0]["type"] == "image/webp"
    assert image["width"] == 1000


def test_a_breakpoints_preset_missing_its_ends_is_a_config_error(tmp_path):
    root = tmp_path / "conf"
    (root / "presets").mkdir(parents=True)
    (root / "channels").mkdir()
    (root / "presets" / "p.toml").write_text(
        '[x]\nresize = { fit = "limit" }\nbreakpoints = { max_width = 900 }\nformat = "jpeg"\n')
    (root / "channels" / "c.toml").write_text(channel_toml("c", {"o": "x"}))
    with pytest.raises(ConfigError, match="min_width"):
        api.plan(catalog(tmp_path, a=flat(100, 100)), config_dir=root)
