"""End to end through the CLI: real problem images through every built-in channel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import problem_images as P
import pyarrow as pa
import pytest
from click.testing import CliRunner
from helpers import LOADERS, content_box, load, mean_colour, output_files, pixels, read

from engine.cli import main
from engine.spec import load_config

CONTRACT = {
    "run_id": pa.string(), "master_id": pa.string(), "master_path": pa.string(),
    "master_sha256": pa.string(), "master_kind": pa.string(), "channel": pa.string(),
    "output": pa.string(), "path": pa.string(), "status": pa.string(), "error": pa.string(),
    "format": pa.string(), "width": pa.int32(), "height": pa.int32(), "bytes": pa.int64(),
    "sha256": pa.string(), "quality": pa.int32(), "duration_s": pa.float64(),
    "video_codec": pa.string(), "audio_codec": pa.string(), "bitrate": pa.int64(),
    "recipe_hash": pa.string(), "render_ms": pa.float64(),
}


def run(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def problem_run(problem_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    result = run("render", str(problem_folder), "--out", str(out), "--no-progress")
    table = read(out)
    return result, out, table, table.to_pylist()


def expected_size(preset, width: int, height: int) -> tuple[int, int]:
    r = preset.resize
    if r.fit in ("fill", "pad"):
        return r.width, r.height
    box = min(r.width, width) if r.fit == "limit" else r.width
    return box, round(height * box / width)


@pytest.mark.slow  # a shared render of every built-in channel (~45 s)
def test_bad_masters_fail_alone_with_clear_errors(problem_run, problem_folder):
    result, _, _, rows = problem_run
    assert result.exit_code == 1, result.output
    failed = {r["master_id"] for r in rows if r["status"] == "failed"}
    assert failed == set(P.BAD)
    reasons = {r["master_id"]: r["error"] for r in rows if r["status"] == "failed"}
    assert "over the limit" in reasons["huge"] and "30000x30000" in reasons["huge"]
    assert "empty file" in reasons["empty"]
    assert "not a supported image" in reasons["notes"]
    assert "cannot decode" in reasons["truncated"]
    for error in reasons.values():
        assert str(problem_folder) in error, "the error names the file"
    per_master = {m: sum(r["master_id"] == m for r in rows) for m in P.BAD + P.GOOD}
    assert len(set(per_master.values())) == 1, "a failed master gets a row per derivative"
    assert all(r["path"] is None for r in rows if r["status"] == "failed")


@pytest.mark.slow  # a shared render of every built-in channel (~45 s)
def test_every_output_has_its_channels_exact_size_format_and_srgb(problem_run):
    _, out, _, rows = problem_run
    config = load_config()
    good = [r for r in rows if r["status"] == "ok"]
    assert {r["master_id"] for r in good} == set(P.GOOD)
    assert {r["channel"] for r in good} == {"instagram", "amazon", "email", "mobile", "web"}
    for row in good:
        image = load(out / row["path"])
        preset = config.presets[row["preset"]]
        assert (image.width, image.height) == (row["width"], row["height"])
        w, h = expected_size(preset, 480, 320)
        assert abs(image.width - w) <= 0 and abs(image.height - h) <= 1, row["path"]
        assert image.get("vips-loader").startswith(LOADERS[row["format"]])
        assert row["format"] == preset.format
        assert image.interpretation == "srgb" and image.bands in (3, 4)
        assert image.bands == 3 or preset.format != "jpeg"
        assert not image.get_typeof("exif-data"), "metadata is stripped"
        assert (out / row["path"]).stat().st_size == row["bytes"]
        assert row["path"].endswith("." + ("jpg" if row["format"] == "jpeg" else row["format"]))


@pytest.mark.slow  # a shared render of every built-in channel (~45 s)
def test_outputs_are_upright_with_the_right_colours(problem_run):
    _, out, _, rows = problem_run
    looked = [r for r in rows
              if r["output"] == "w600" and r["status"] == "ok" and r["master_id"] != "grey"]
    assert len(looked) >= 8, "every orientation and colour case is looked at"
    for row in looked:
        image = load(out / row["path"])
        assert image.width > image.height, f"{row['master_id']} is not landscape"
        top_left, bottom_right = mean_colour(image, 0.25, 0.25), mean_colour(image, 0.75, 0.75)
        assert top_left[0] > 150 and top_left[2] < 90, f"{row['master_id']}: red block moved"
        assert bottom_right[2] > 120 and bottom_right[0] < 90, f"{row['master_id']}: blue moved"


@pytest.mark.slow  # a shared render of every built-in channel (~45 s)
def test_manifest_has_the_contract_columns_and_types(problem_run):
    _, out, table, rows = problem_run
    for name, kind in CONTRACT.items():
        assert table.schema.field(name).type == kind, name
    assert len({r["run_id"] for r in rows}) == 1
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["sha256"] and r["recipe_hash"] and r["master_sha256"] for r in ok)
    assert all(r["quality"] is not None for r in ok if r["format"] != "png")
    assert all(r["duration_s"] is None and r["video_codec"] is None for r in rows)
    assert output_files(out) == {r["path"] for r in ok}, "nothing unrecorded, no temporaries"
    assert (out / "_runs" / f"{rows[0]['run_id']}.parquet").is_file(), "the run's history"


@pytest.mark.slow  # a shared render of every built-in channel (~45 s)
def test_email_outputs_stay_within_their_byte_budgets(problem_run):
    _, out, _, rows = problem_run
    config = load_config()
    email = [r for r in rows if r["channel"] == "email" and r["status"] == "ok"]
    assert email
    for row in email:
        budget = config.presets[row["preset"]].max_bytes
        assert (out / row["path"]).stat().st_size <= budget


def test_amazon_is_pure_white_with_the_product_filling_85_percent(tmp_path):
    from engine.demo import _to_image, product_shot

    masters = tmp_path / "masters"
    masters.mkdir()
    _to_image(product_shot(1200, 900, (200, 40, 40))).jpegsave(str(masters / "wide.jpg"))
    _to_image(product_shot(600, 1000, (40, 40, 200), shape="box")).jpegsave(
        str(masters / "tall.jpg"))
    P.write_alpha(masters)
    out = tmp_path / "out"
    result = run("render", str(masters), "--out", str(out), "--channel", "amazon",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    files = sorted((out / "amazon").glob("*.jpg"))
    assert [f.name for f in files] == ["cutout.MAIN.jpg", "tall.MAIN.jpg", "wide.MAIN.jpg"]
    for path in files:
        image = load(path)
        assert (image.width, image.height) == (2000, 2000)
        rgb = pixels(image)
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        assert (border == 255).all(), f"{path.name}: border is not pure white"
        x0, y0, x1, y1 = content_box(image)
        assert max(x1 - x0, y1 - y0) >= 0.85 * 2000, f"{path.name}: product too small"
        assert max(x1 - x0, y1 - y0) <= 0.9 * 2000


@pytest.mark.slow  # ~10 s: the default subset is kept under 5 minutes on 2 cores
def test_a_recipe_shared_by_two_channels_renders_once_and_lands_twice(tmp_path, problem_folder):
    cfg = tmp_path / "cfg"
    (cfg / "channels").mkdir(parents=True)
    (cfg / "channels" / "newsletter.toml").write_text(
        'name = "newsletter"\n[[outputs]]\nname = "body"\npreset = "email-600"\n')
    out = tmp_path / "out"
    result = run("render", str(problem_folder / "orient-6.jpg").rsplit("/", 1)[0], "--out",
                 str(out), "--channel", "email", "--channel", "newsletter",
                 "--config-dir", str(cfg), "--no-progress")
    assert result.exit_code == 1  # the problem folder holds bad masters too
    rows = [r for r in read(out).to_pylist() if r["master_id"] == "orient-6"]
    body = next(r for r in rows if r["channel"] == "newsletter")
    w600 = next(r for r in rows if r["output"] == "w600")
    assert body["sha256"] == w600["sha256"] and body["path"] != w600["path"]
    assert (out / body["path"]).read_bytes() == (out / w600["path"]).read_bytes()


def test_bad_config_exits_2_and_renders_nothing(tmp_path, problem_folder):
    cfg = tmp_path / "cfg"
    (cfg / "presets").mkdir(parents=True)
    (cfg / "presets" / "x.toml").write_text('[x]\nformat = "gif"\nresize = { width = 10 }\n')
    out = tmp_path / "out"
    result = run("render", str(problem_folder), "--out", str(out), "--config-dir", str(cfg))
    assert result.exit_code == 2
    assert "x.toml" in result.output and "x.format" in result.output
    assert not out.exists()
    assert run("render", str(problem_folder), "--out", str(out), "--channel", "tiktok"
               ).exit_code == 2
    assert run("render", str(tmp_path / "missing"), "--out", str(out)).exit_code == 2
    assert run("render", str(problem_folder)).exit_code == 2  # no --out: usage error
    assert run("render", str(problem_folder), "--out", str(out), "--workers", "0").exit_code == 2
    assert run("render", str(problem_folder), "--out", str(out), "--scheduler", "gpu"
               ).exit_code == 2
    assert not out.exists()


def test_plan_lists_derivatives_with_totals_without_rendering(problem_folder):
    result = run("plan", str(problem_folder), "--channel", "amazon", "--channel", "email")
    assert result.exit_code == 0
    assert "orient-3.MAIN.jpg" in result.output and "derivatives" in result.output
    import json

    doc = json.loads(run("plan", str(problem_folder), "--json").output)
    masters = len(P.GOOD) + len(P.BAD)
    assert doc["totals"]["masters"] == masters
    assert doc["totals"]["per_channel"]["amazon"] == masters
    assert doc["totals"]["derivatives"] == sum(len(m["derivatives"]) for m in doc["masters"])


def test_channels_lists_every_builtin_channel():
    result = run("channels")
    assert result.exit_code == 0
    for name in ("instagram", "amazon", "email", "mobile", "web"):
        assert f"{name}:" in result.output
