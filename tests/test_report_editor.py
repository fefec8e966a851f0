"""The editor's loop in `fanout report`: a thumbnail per master with each output's crop region,
focal points and crop boxes set in the page, saved as the catalog's crops file, and the next
render re-rendering exactly the outputs whose framing moved."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import pyvips
from helpers import channel_toml, config_folder, load, pixels, read

from engine import api
from engine.catalog import crops_location, load_catalog
from engine.publish.editor import aspect_name

PRESETS = """
[e-square]
resize = { width = 100, height = 100, fit = "fill" }
format = "png"

[e-wide]
resize = { width = 160, height = 90, fit = "fill", gravity = "attention" }
format = "png"

[e-fit]
resize = { width = 120, fit = "fit" }
format = "png"
"""
CHANNEL = channel_toml("t", {"square": "e-square", "wide": "e-wide", "fit": "e-fit"})
W, H = 480, 320
BLUE = (30, 60, 220)
RED = [255, 0, 0]


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return config_folder(tmp_path_factory.mktemp("editorconf"), {"e": PRESETS}, {"t": CHANNEL})


def quadrants(width: int = W, height: int = H) -> pyvips.Image:
    """A gradient with a distinctive quadrant each: bottom right is blue (with texture, so a
    crop of it can be told from another), the others warm."""
    xy = pyvips.Image.xyz(width, height)
    gx = (xy[0] * (100 / width) + 80).cast("uchar")
    gy = (xy[1] * (100 / height) + 80).cast("uchar")
    img = gx.bandjoin([gy, (gx + gy) / 2]).cast("uchar").copy(interpretation="srgb")
    hw, hh = width // 2, height // 2
    texture = (pyvips.Image.xyz(hw, hh)[0] % 16 * 4).cast("uchar")
    blue = (texture + BLUE[0]).bandjoin([texture + BLUE[1], texture * 0 + BLUE[2]])
    img = img.insert(blue.cast("uchar").copy(interpretation="srgb"), hw, hh)
    return img.draw_rect([230, 200, 40], 0, hh, hw, hh, fill=True)


def with_marker(fx: float, fy: float) -> pyvips.Image:
    img = quadrants()
    return img.draw_rect(RED, round(fx * W) - 6, round(fy * H) - 6, 12, 12, fill=True)


def write_listing(root: Path, ids: list[str]) -> Path:
    listing = root / "catalog.csv"
    listing.write_text("id,path\n" + "".join(f"{i},{i}.png\n" for i in ids))
    return listing


def by_key(rows: list) -> dict[tuple[str, str], dict]:
    return {(r["master_id"], r["output"]): r for r in rows}


def editor_doc(report: Path) -> dict:
    found = re.search(r'<script type="application/json" id="editor-data">(.*?)</script>',
                      report.read_text(), re.S)
    assert found is not None
    return json.loads(found.group(1))


def test_aspect_names_are_the_crops_files_keys():
    assert aspect_name(1920, 1080) == "16:9"
    assert aspect_name(1080, 1350) == "4:5"
    assert aspect_name(100, 100) == "1:1"
    assert aspect_name(1080, 566) == "1.908:1"
    assert aspect_name(1200, 630) == "1.905:1"


def test_the_report_embeds_thumbnails_regions_and_the_sidecar(tmp_path, config_dir):
    quadrants().pngsave(str(tmp_path / "m.png"))
    quadrants().pngsave(str(tmp_path / "gone.png"))
    listing = write_listing(tmp_path, ["m", "gone"])
    (tmp_path / "catalog.crops.toml").write_text('[m]\n"16:9" = [0, 0, 320, 180]\n')
    out = tmp_path / "out"
    assert api.render(listing, out, channels=["t"], config_dir=config_dir).exit_code == 0
    (tmp_path / "gone.png").unlink()  # a master that cannot be read: a note, not a failure
    report = api.report(out, catalog=listing)
    html = report.read_text()
    doc = editor_doc(report)
    assert doc["file_name"] == "catalog.crops.toml"
    assert doc["location"] == str(tmp_path / "catalog.crops.toml")
    assert doc["sidecar"] == [["m", [["16:9", [0, 0, 320, 180]]]]]
    m = next(d for d in doc["masters"] if d["id"] == "m")
    assert (m["w"], m["h"]) == (W, H)
    wide = next(t for t in m["targets"] if t["key"] == "t/wide")
    assert wide["region"] == [0, 0, 320, 180] and wide["crop_by"] == "editor"
    assert {a["key"] for a in m["aspects"]} == {"1:1", "16:9"}
    assert not next(t for t in m["targets"] if t["key"] == "t/fit")["fill"]
    # the thumbnail is the master, upright and downsized, inside the page
    uri = re.search(r'data-master="m"><div class="stage"[^>]*><img class="thumb" '
                    r'src="data:image/webp;base64,([^"]+)"', html)
    assert uri is not None
    import base64

    thumb = pyvips.Image.new_from_buffer(base64.b64decode(uri.group(1)), "")
    assert (thumb.width, thumb.height) == (W, H)
    assert np.abs(pixels(thumb)[..., :3].astype(float)
                  - pixels(quadrants())[..., :3]).mean() < 6
    assert 'data-master="gone"><p class="note">cannot show the master: file not found' in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "works offline: no CDN"


def test_the_report_finds_the_catalog_the_last_run_recorded(tmp_path, config_dir):
    quadrants().pngsave(str(tmp_path / "m.png"))
    out = tmp_path / "out"
    listing = write_listing(tmp_path, ["m"])
    api.render(listing, out, channels=["t"], config_dir=config_dir)
    doc = editor_doc(api.report(out))  # no catalog named: the manifest's
    assert doc["file_name"] == f"{listing.stem}.crops.toml"
    listing.rename(tmp_path / "moved.csv")  # gone: the page says how to name the file
    report = api.report(out)
    assert editor_doc(report)["file_name"] == "crops.toml"
    assert "made without <code>--catalog</code>" in report.read_text()


def test_a_folder_catalogs_crops_file_lives_beside_the_folder(tmp_path, config_dir):
    folder = tmp_path / "masters"
    (folder / "shoes").mkdir(parents=True)
    quadrants().pngsave(str(folder / "shoes" / "m.png"))
    assert crops_location(str(folder), folder=True) == str(tmp_path / "masters.crops.toml")
    (tmp_path / "masters.crops.toml").write_text('["shoes/m"]\n"1:1" = [260, 180, 140, 140]\n')
    (master,) = load_catalog(folder)
    assert master.boxes == (("1:1", (260, 180, 140, 140)),)
    out = tmp_path / "out"
    rows = by_key(api.render(folder, out, channels=["t"], config_dir=config_dir).rows)
    square = rows[("shoes/m", "square")]
    assert square["crop_by"] == "editor"
    assert [square[k] for k in ("region_x", "region_y", "region_w", "region_h")] == [
        260, 180, 140, 140]
    doc = editor_doc(api.report(out, catalog=folder))
    assert doc["file_name"] == "masters.crops.toml"
    assert doc["location"] == str(tmp_path / "masters.crops.toml")
    (tmp_path / "masters.crops.toml").write_text('["shoes/n"]\n"1:1" = [0, 0, 10, 10]\n')
    with pytest.raises(api.ConfigError, match="no master with id 'shoes/n' in the folder"):
        load_catalog(folder)


def to_page(box: dict, x: float, y: float) -> tuple[float, float]:
    """Master pixels -> page coordinates on the master's thumbnail."""
    return box["x"] + x / W * box["width"], box["y"] + y / H * box["height"]


@pytest.mark.slow
def test_click_drag_save_render_moves_exactly_the_crops_asked(browser, tmp_path, config_dir):
    quadrants().pngsave(str(tmp_path / "m.png"))
    with_marker(0.8, 0.3).pngsave(str(tmp_path / "n.png"))
    quadrants().pngsave(str(tmp_path / "o.png"))
    listing = write_listing(tmp_path, ["m", "n", "o"])
    sidecar = tmp_path / "catalog.crops.toml"
    sidecar.write_text('# set by hand\n[o]\n"16:9" = [16, 8, 320, 180]\n')
    out = tmp_path / "out"
    first = by_key(api.render(listing, out, channels=["t"], config_dir=config_dir).rows)
    assert {r["status"] for r in first.values()} == {"ok"} and len(first) == 9

    page = browser.new_page(viewport={"width": 1280, "height": 1800}, accept_downloads=True)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(api.report(out, catalog=listing).as_uri())

    def stage(master_id: str) -> dict:
        editor = page.locator(f'.editor[data-master="{master_id}"]')
        editor.scroll_into_view_if_needed()
        box = editor.locator("svg").bounding_box()
        image = editor.locator("img.thumb").bounding_box()
        assert box is not None and image is not None and box["width"] > 100
        assert all(abs(box[k] - image[k]) < 1 for k in box), "the drawing lies on the master"
        return box

    def hits_svg(x: float, y: float, master_id: str) -> bool:
        return page.evaluate(f"document.elementFromPoint({x}, {y}).closest('.editor')"
                             f"?.dataset.master === {json.dumps(master_id)}")

    # m: a 1:1 box dragged over the blue quadrant (the square output's aspect)
    page.locator('.editor[data-master="m"] select.tool').select_option("aspect:1:1")
    box = stage("m")
    start, end = to_page(box, 260, 180), to_page(box, 400, 300)
    assert hits_svg(*start, "m") and hits_svg(*end, "m")
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=6)
    page.mouse.up()
    # n: a click on its red marker sets the focal point
    box = stage("n")
    point = to_page(box, 0.8 * W, 0.3 * H)
    assert hits_svg(*point, "n")
    page.mouse.click(*point)
    assert page.inner_text("#crops-changes") == "2"
    assert page.locator('.editor[data-master="m"] g.box[data-key="1:1"]').count() == 1
    assert page.locator('.editor[data-master="n"] g.focus').count() == 1

    with page.expect_download() as caught:
        page.click("#save-crops")
    download = caught.value
    assert download.suggested_filename == "catalog.crops.toml" == Path(
        crops_location(str(listing))).name
    download.save_as(str(sidecar))
    assert errors == []
    assert all(u.startswith(("file://", "data:", "blob:")) for u in requests), requests
    page.close()

    saved = tomllib.loads(sidecar.read_text())
    assert saved["o"] == {"16:9": [16, 8, 320, 180]}, "other masters' entries are kept"
    chosen = saved["m"]["1:1"]
    assert chosen[2] == chosen[3], "the box has the aspect ratio it was drawn for"
    assert all(abs(a - b) <= 2 for a, b in zip(chosen, [260, 180, 140, 140], strict=True))
    fx, fy = saved["n"]["focus"]
    assert abs(fx - 0.8) < 0.01 and abs(fy - 0.3) < 0.01

    again = by_key(api.render(listing, out, channels=["t"], config_dir=config_dir).rows)
    moved = {k for k, r in again.items() if r["status"] == "ok"}
    assert moved == {("m", "square"), ("n", "square"), ("n", "wide")}
    for key, row in again.items():
        if key in moved:
            assert row["recipe_hash"] != first[key]["recipe_hash"]
        else:
            assert row["status"] == "skipped" and row["recipe_hash"] == first[key]["recipe_hash"]
    manifest = by_key(read(out).to_pylist())
    square = manifest[("m", "square")]
    assert square["crop_by"] == "editor"
    assert [square[k] for k in ("region_x", "region_y", "region_w", "region_h")] == chosen
    got = pixels(load(out / square["path"]))[..., :3].astype(float)
    want = pixels(quadrants().crop(*chosen).resize(100 / chosen[2]))[..., :3]
    assert got.shape == want.shape == (100, 100, 3)
    assert np.abs(got - want).mean() < 3, "the output shows the box"
    assert got[..., 2].mean() > 200 > got[..., 0].mean() + 100, "all blue quadrant"
    for output in ("square", "wide"):
        row = manifest[("n", output)]
        assert row["crop_by"] == "focus"
        x, y, w, h = (row[k] for k in ("region_x", "region_y", "region_w", "region_h"))
        assert x <= fx * W <= x + w and y <= fy * H <= y + h
        rgb = pixels(load(out / row["path"]))[..., :3].astype(int)
        assert ((rgb[..., 0] > 200) & (rgb[..., 1] < 60)).sum() > 10, "the marker is in it"


def test_fanout_report_takes_the_catalog_and_refuses_a_broken_crops_file(tmp_path, config_dir):
    from click.testing import CliRunner

    from engine.cli import main

    quadrants().pngsave(str(tmp_path / "m.png"))
    listing = write_listing(tmp_path, ["m"])
    out = tmp_path / "out"
    api.render(listing, out, channels=["t"], config_dir=config_dir)
    result = CliRunner().invoke(main, ["report", str(out), "--catalog", str(listing)])
    assert result.exit_code == 0, result.output
    assert editor_doc(out / "report.html")["file_name"] == "catalog.crops.toml"
    (tmp_path / "catalog.crops.toml").write_text("[m\n")
    result = CliRunner().invoke(main, ["report", str(out), "--catalog", str(listing)])
    assert result.exit_code == 2 and "not a valid crops file" in result.output
