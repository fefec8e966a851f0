"""Editors in control of crops: focal points (catalog focus_x/focus_y) and crop boxes (the
listing's <stem>.crops.toml sidecar) win over gravity and attention, for images and video."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pyvips
from helpers import channel_toml, config_folder, load, pixels, read, write_config

from engine import api
from engine.catalog import load_catalog
from engine.errors import ConfigError
from engine.geometry import Framing, box_to_aspect, focus_offset

PRESETS = """
[f-wide]
resize = { width = 160, height = 90, fit = "fill", gravity = "attention" }
format = "png"

[f-tall]
resize = { width = 90, height = 160, fit = "fill", gravity = "attention" }
format = "png"

[f-square]
resize = { width = 100, height = 100, fit = "fill" }
format = "png"

[f-fit]
resize = { width = 120, fit = "fit" }
format = "png"
"""
FILLS = {"wide": (160, 90), "tall": (90, 160), "square": (100, 100)}
CHANNEL = channel_toml("t", {"wide": "f-wide", "tall": "f-tall", "square": "f-square",
                             "fit": "f-fit"})
RED = [255, 0, 0]


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return config_folder(tmp_path_factory.mktemp("focusconf"), {"focus": PRESETS}, {"t": CHANNEL})


def master(width: int, height: int, marker: tuple[float, float] | None = None,
           size: int = 0) -> pyvips.Image:
    """A smooth grey-green gradient, a busy colourful patch bottom right (what attention
    likes), and a pure red square centred on `marker` (fractions) if given."""
    x = pyvips.Image.xyz(width, height)
    gx = (x[0] * (120 / width) + 60).cast("uchar")
    gy = (x[1] * (120 / height) + 60).cast("uchar")
    img = gx.bandjoin([gy, (gx + gy) / 2]).cast("uchar").copy(interpretation="srgb")
    noise = pyvips.Image.gaussnoise(width // 4, height // 4, sigma=90, mean=128)
    patch = noise.bandjoin([noise.rot180(), noise.fliphor()]).cast("uchar")
    img = img.insert(patch.copy(interpretation="srgb"), width - width // 4 - 4,
                     height - height // 4 - 4)
    if marker is not None:
        s = size or max(4, width // 50)
        cx, cy = round(marker[0] * width), round(marker[1] * height)
        img = img.draw_rect(RED, cx - s // 2, cy - s // 2, s, s, fill=True)
    return img


def red_centre(image: pyvips.Image) -> tuple[float, float] | None:
    rgb = pixels(image)[..., :3].astype(int)
    mask = (rgb[..., 0] > 190) & (rgb[..., 1] < 70) & (rgb[..., 2] < 70)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5


def write_listing(root: Path, rows: list[dict], crops: str | None = None) -> Path:
    names = ["id", "path", "focus_x", "focus_y"]
    lines = [",".join(names)] + [",".join(str(r.get(n, "")) for n in names) for r in rows]
    listing = root / "catalog.csv"
    listing.write_text("\n".join(lines) + "\n")
    if crops is not None:
        (root / "catalog.crops.toml").write_text(crops)
    return listing


def by_key(rows: list) -> dict[tuple[str, str], dict]:
    return {(r["master_id"], r["output"]): r for r in rows}


def expected_marker(src: tuple[int, int], out: tuple[int, int],
                    focus: tuple[float, float]) -> tuple[float, float]:
    """Where the focal point lands in a fill output: centred, unless the frame's edge stops
    the window (the same arithmetic done by hand)."""
    (w, h), (cw, ch) = src, out
    s = max(cw / w, ch / h)
    sw, sh = max(cw, math.ceil(w * s - 1e-9)), max(ch, math.ceil(h * s - 1e-9))
    px, py = focus[0] * sw, focus[1] * sh
    left = min(max(px - cw / 2, 0), sw - cw)
    top = min(max(py - ch / 2, 0), sh - ch)
    return px - left, py - top


def test_focus_offset_centres_then_clamps():
    assert focus_offset(400, 100, 100, 100, 200, 50) == (150, 0)
    assert focus_offset(400, 100, 100, 100, 10, 50) == (0, 0)
    assert focus_offset(400, 100, 100, 100, 395, 50) == (300, 0)


@pytest.mark.parametrize("focus", [(0.12, 0.2), (0.9, 0.85)])
def test_a_focal_point_near_a_corner_stays_in_every_fill_crop(tmp_path, config_dir, focus):
    # A large JPEG: decoded shrunk on load, so the focal point is scaled to the decoded base.
    master(2400, 1600, focus, size=48).jpegsave(str(tmp_path / "m.jpg"), Q=95)
    listing = write_listing(tmp_path, [{"id": "m", "path": "m.jpg", "focus_x": focus[0],
                                        "focus_y": focus[1]}])
    result = api.render(listing, tmp_path / "out", channels=["t"], config_dir=config_dir)
    rows = by_key(result.rows)
    assert {r["status"] for r in rows.values()} == {"ok"}
    for output, size in FILLS.items():
        image = load(tmp_path / "out" / rows[("m", output)]["path"])
        assert (image.width, image.height) == size
        found = red_centre(image)
        assert found is not None, f"{output}: the focal point was cropped away"
        ex, ey = expected_marker((2400, 1600), size, focus)
        assert abs(found[0] - ex) <= 2.5 and abs(found[1] - ey) <= 2.5, (output, found, ex, ey)


def test_the_focal_point_moves_the_window_that_gravity_would_choose(tmp_path, config_dir):
    focus = (0.3, 0.5)
    master(600, 400, focus, size=10).pngsave(str(tmp_path / "m.png"))
    listing = write_listing(tmp_path, [{"id": "m", "path": "m.png", "focus_x": focus[0],
                                        "focus_y": focus[1]}])
    rows = by_key(api.render(listing, tmp_path / "out", channels=["t"],
                             config_dir=config_dir).rows)
    tall = load(tmp_path / "out" / rows[("m", "tall")]["path"])
    found = red_centre(tall)
    assert found is not None and abs(found[0] - 45) <= 1.5 and abs(found[1] - 80) <= 1.5


def test_an_editor_box_wins_over_attention_and_shows_exactly_the_box(tmp_path, config_dir):
    src = master(600, 400)
    src.pngsave(str(tmp_path / "m.png"))
    listing = write_listing(tmp_path, [{"id": "m", "path": "m.png"}], crops=(
        '[m]\n"16:9" = [40, 30, 320, 180]\n"t/square" = [10, 200, 150, 150]\n'))
    result = api.render(listing, tmp_path / "out", channels=["t"], config_dir=config_dir)
    rows = by_key(result.rows)
    assert {r["status"] for r in rows.values()} == {"ok"}

    def diff(out: Path, output: str, box: tuple[int, int, int, int], size: tuple[int, int],
             rows: dict) -> float:
        got = pixels(load(out / rows[("m", output)]["path"])).astype(float)
        want = pixels(src.crop(*box).resize(size[0] / box[2], vscale=size[1] / box[3]))
        assert got.shape == want.shape
        return float(np.abs(got - want).mean())

    out = tmp_path / "out"
    assert diff(out, "wide", (40, 30, 320, 180), (160, 90), rows) < 3  # by aspect
    assert diff(out, "square", (10, 200, 150, 150), (100, 100), rows) < 3  # by output name
    # without the box, attention (and the default centre gravity) frame something else
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "m.png").write_bytes((tmp_path / "m.png").read_bytes())
    unboxed = by_key(api.render(write_listing(plain, [{"id": "m", "path": "m.png"}]),
                                plain / "out", channels=["t"], config_dir=config_dir).rows)
    assert diff(plain / "out", "wide", (40, 30, 320, 180), (160, 90), unboxed) > 10
    assert diff(plain / "out", "square", (10, 200, 150, 150), (100, 100), unboxed) > 10


@pytest.mark.parametrize("size", [(600, 400), (2400, 1600)])
def test_an_editor_box_is_the_manifests_region_with_crop_by_editor(tmp_path, config_dir, size):
    # 2400x1600 JPEG: decoded shrunk on load, yet the region is in the master's own pixels.
    width, height = size
    k = width // 600
    master(width, height).jpegsave(str(tmp_path / "m.jpg"), Q=95)
    wide, square = [40 * k, 30 * k, 320 * k, 181 * k], [10 * k, 200 * k, 150 * k, 150 * k]
    listing = write_listing(tmp_path, [{"id": "m", "path": "m.jpg"}], crops=(
        f'[m]\n"16:9" = {wide}\n"t/square" = {square}\n'))
    rows = by_key(api.render(listing, tmp_path / "out", channels=["t"],
                             config_dir=config_dir).rows)
    assert {r["status"] for r in rows.values()} == {"ok"}
    # 181 rows is not 16:9: the box is narrowed around its centre to the output's aspect
    narrowed = box_to_aspect(tuple(wide), 160, 90)
    expected = {"wide": [narrowed.left, narrowed.top, narrowed.width, narrowed.height],
                "square": square}
    for output, box in expected.items():
        row = rows[("m", output)]
        assert row["crop_by"] == "editor"
        assert [row[f"region_{c}"] for c in "xywh"] == box, output
        assert (row["source_width"], row["source_height"]) == size
        assert row["scale"] == pytest.approx(row["width"] / box[2], rel=1e-3)
        assert row["region_w"] * row["height"] == pytest.approx(
            row["region_h"] * row["width"], rel=0.01)
    assert rows[("m", "tall")]["crop_by"] == "attention"
    assert rows[("m", "fit")]["crop_by"] is None


def test_a_box_outside_the_image_fails_that_derivative_alone(tmp_path, config_dir):
    master(600, 400).pngsave(str(tmp_path / "m.png"))
    master(600, 400).pngsave(str(tmp_path / "n.png"))
    listing = write_listing(tmp_path, [{"id": "m", "path": "m.png"}, {"id": "n", "path": "n.png"}],
                            crops='[m]\n"1:1" = [500, 300, 200, 200]\n')
    rows = by_key(api.render(listing, tmp_path / "out", channels=["t"],
                             config_dir=config_dir).rows)
    bad = rows[("m", "square")]
    assert bad["status"] == "failed"
    assert "crop box 1:1 = [500, 300, 200, 200] is outside the 600x400 image" in bad["error"]
    assert all(r["status"] == "ok" for k, r in rows.items() if k != ("m", "square"))


def test_focus_x_without_focus_y_is_that_rows_error(tmp_path):
    master(60, 40).pngsave(str(tmp_path / "m.png"))
    listing = write_listing(tmp_path, [
        {"id": "a", "path": "m.png", "focus_x": 0.5},
        {"id": "b", "path": "m.png", "focus_x": 1.5, "focus_y": 0.5},
        {"id": "c", "path": "m.png", "focus_x": 0.25, "focus_y": 0.75},
    ])
    a, b, c = load_catalog(listing)
    assert a.errors == ("row 2: focus_x without focus_y: a focal point needs both (0..1)",)
    assert len(b.errors) == 1 and "between 0 and 1" in b.errors[0]
    assert c.errors == () and c.focus == (0.25, 0.75)
    assert "focus_x" not in c.extra


def test_the_crops_file_refuses_unknown_ids_and_records_bad_entries(tmp_path):
    master(60, 40).pngsave(str(tmp_path / "m.png"))
    rows = [{"id": "m", "path": "m.png"}]
    with pytest.raises(ConfigError, match="no master with id 'mm'"):
        load_catalog(write_listing(tmp_path, rows, crops='[mm]\n"1:1" = [0, 0, 10, 10]\n'))
    (m,) = load_catalog(write_listing(tmp_path, rows, crops=(
        '[m]\nfocus = [0.1, 0.9]\n"4:3" = [0, 0, 40, 30]\n"web/hero" = [1, 2, 3, 4]\n')))
    assert m.errors == () and m.focus == (0.1, 0.9)
    assert m.boxes == (("4:3", (0, 0, 40, 30)), ("web/hero", (1, 2, 3, 4)))
    (m,) = load_catalog(write_listing(tmp_path, rows, crops='[m]\nwide = [0, 0, 1.5, 2]\n'))
    assert len(m.errors) == 1 and "catalog.crops.toml [m]: 'wide'" in m.errors[0]


def test_changing_the_focal_point_rerenders_exactly_that_masters_fill_outputs(tmp_path,
                                                                               config_dir):
    master(600, 400, (0.3, 0.5)).pngsave(str(tmp_path / "a.png"))
    master(600, 400, (0.7, 0.5)).pngsave(str(tmp_path / "b.png"))
    rows = [{"id": "a", "path": "a.png", "focus_x": 0.3, "focus_y": 0.5},
            {"id": "b", "path": "b.png", "focus_x": 0.7, "focus_y": 0.5}]
    out = tmp_path / "out"
    first = api.render(write_listing(tmp_path, rows), out, channels=["t"], config_dir=config_dir)
    assert {r["status"] for r in first.rows} == {"ok"}
    again = api.render(write_listing(tmp_path, rows), out, channels=["t"], config_dir=config_dir)
    assert {r["status"] for r in again.rows} == {"skipped"}
    rows[0]["focus_x"] = 0.6
    moved = by_key(api.render(write_listing(tmp_path, rows), out, channels=["t"],
                              config_dir=config_dir).rows)
    rendered = {k for k, r in moved.items() if r["status"] == "ok"}
    assert rendered == {("a", o) for o in FILLS}
    assert {r["status"] for k, r in moved.items() if k not in rendered} == {"skipped"}
    # and a box added later re-renders only the output it names
    crops = '[b]\n"t/wide" = [0, 0, 320, 180]\n'
    boxed = by_key(api.render(write_listing(tmp_path, rows, crops), out, channels=["t"],
                              config_dir=config_dir).rows)
    assert {k for k, r in boxed.items() if r["status"] == "ok"} == {("b", "wide")}
    recipes = {r["recipe_hash"] for r in read(out).to_pylist()}
    assert recipes >= {boxed[("b", "wide")]["recipe_hash"]}


def test_plan_frames_fill_outputs_only():
    from engine.catalog import Master
    from engine.plan import framed_hash, framing_for
    from engine.spec import load_config

    presets = load_config().presets
    m = Master(id="m", path="", product="m", focus=(0.2, 0.3),
               boxes=(("1.91:1", (0, 0, 191, 100)), ("web/x", (0, 0, 5, 5))))
    assert framing_for(m, "web", "y", presets["ig-feed-square"]) == Framing(focus=(0.2, 0.3))
    assert framing_for(m, "instagram", "z", presets["ig-feed-landscape"]) == Framing(
        focus=(0.2, 0.3), box=(0, 0, 191, 100), key="1.91:1")
    assert framing_for(m, "web", "x", presets["ig-feed-square"]).key == "web/x"
    fit = next(p for p in presets.values() if p.resize.fit == "fit")
    assert framing_for(m, "web", "x", fit) is None
    assert framed_hash("abc", None) == "abc" != framed_hash("abc", Framing(focus=(0.2, 0.3)))


VIDEO_PRESETS = """
[fv-story]
kind = "video"
resize = { width = 180, height = 320, fit = "fill" }
crf = 30
speed = "veryfast"
audio = "none"
"""


@pytest.mark.slow
def test_a_video_masters_fill_crop_follows_the_focal_point(tmp_path):
    import av

    width, height, focus = 320, 180, (0.7, 0.25)
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frame = np.full((height, width, 3), 128, np.uint8)
        cx, cy = round(focus[0] * width), round(focus[1] * height)
        frame[cy - 8:cy + 8, cx - 8:cx + 8] = RED
        for _ in range(10):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    conf = tmp_path / "conf"
    (conf / "presets").mkdir(parents=True)
    (conf / "channels").mkdir()
    (conf / "presets" / "v.toml").write_text(VIDEO_PRESETS)
    (conf / "channels" / "v.toml").write_text(channel_toml("v", {"story": "fv-story"}))
    listing = write_listing(tmp_path, [{"id": "clip", "path": "clip.mp4", "focus_x": focus[0],
                                        "focus_y": focus[1]}])
    result = api.render(listing, tmp_path / "out", channels=["v"], config_dir=conf)
    (row,) = result.rows
    assert row["status"] == "ok", row["error"]
    with av.open(str(tmp_path / "out" / row["path"])) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    found = red_centre(pyvips.Image.new_from_array(first, interpretation="srgb"))
    assert found is not None, "the focal point was cropped away (gravity centre would)"
    ex, ey = expected_marker((width, height), (180, 320), focus)
    assert abs(found[0] - ex) <= 3 and abs(found[1] - ey) <= 3, (found, ex, ey)


def test_a_box_too_small_for_the_output_fails_with_its_numbers(tmp_path):
    conf = tmp_path / "conf"
    write_config(conf, "presets", "s",
        '[s-never]\nresize = { width = 160, height = 90, fit = "fill" }\nformat = "png"\n'
        'upscale = "never"\n\n'
        '[s-square]\nresize = { width = 50, height = 50, fit = "fill" }\nformat = "png"\n')
    write_config(conf, "channels", "s", channel_toml("s", {"wide": "s-never",
                                                           "square": "s-square"}))
    master(600, 400).pngsave(str(tmp_path / "m.png"))
    listing = write_listing(tmp_path, [{"id": "m", "path": "m.png"}], crops=(
        '[m]\n"16:9" = [0, 0, 32, 18]\n"1:1" = [5, 5, 0, 10]\n'))
    rows = by_key(api.render(listing, tmp_path / "out", channels=["s"], config_dir=conf).rows)
    wide, square = rows[("m", "wide")], rows[("m", "square")]
    assert wide["status"] == square["status"] == "failed"
    assert "crop box 16:9 = [0, 0, 32, 18]" in wide["error"] and "upscale" in wide["error"]
    assert "32x18" in wide["error"] and "160x90" in wide["error"]
    assert "crop box 1:1 = [5, 5, 0, 10] is smaller than 1 px in the 600x400 image" in (
        square["error"])
