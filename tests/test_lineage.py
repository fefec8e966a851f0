"""Lineage in the manifest (where each file's pixels came from) and no silent upscaling."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from engine import api
from engine.demo import _to_image, product_shot
from engine.errors import MasterError, NotApplicable
from engine.image.render import render_all
from engine.job import _facts
from engine.rows import SCHEMA, Status
from engine.spec.models import ImagePreset, Resize, Rung, VideoPreset


def jpeg(width: int, height: int, border: int = 0) -> bytes:
    """A product shot, optionally inside a white border `border` px wide."""
    image = _to_image(product_shot(width, height, (200, 40, 40)))
    if border:
        image = image.embed(border, border, width + 2 * border, height + 2 * border,
                            extend="background", background=[255, 255, 255])
    return image.jpegsave_buffer(Q=95)


def render_one(data: bytes, **preset: object) -> dict[str, object]:
    p = ImagePreset(**{"format": "jpeg", **preset})
    result = render_all(data, {"r": p})[0]["r"]
    if isinstance(result, MasterError):
        raise result
    return _facts(result)


def test_the_schema_has_the_lineage_columns():
    for name in ("source_width", "source_height", "region_x", "region_y", "region_w",
                 "region_h", "trim_x", "trim_y", "trim_w", "trim_h"):
        assert str(SCHEMA.field(name).type) == "int32"
    assert str(SCHEMA.field("scale").type) == "double"
    assert str(SCHEMA.field("crop_by").type) == str(SCHEMA.field("encoder").type) == "string"


@pytest.mark.parametrize("gravity", ["centre", "north", "attention"])
def test_fill_region_has_the_output_aspect_and_scale_is_output_over_region(gravity):
    f = render_one(jpeg(1200, 800), resize=Resize(width=300, height=300, fit="fill",
                                                  gravity=gravity))
    assert (f["source_width"], f["source_height"]) == (1200, 800)
    assert f["region_w"] / f["region_h"] == pytest.approx(1.0, abs=0.01)
    assert f["scale"] == pytest.approx(f["width"] / f["region_w"], rel=0.01)
    assert f["crop_by"] == gravity
    assert 0 <= f["region_x"] and f["region_x"] + f["region_w"] <= 1200
    assert f["region_h"] == 800  # the whole height: the crop is across
    if gravity == "north":
        assert f["region_y"] == 0
    assert f["trim_x"] is None and f["trim_w"] is None


def test_fit_shows_the_whole_master_and_has_no_crop():
    f = render_one(jpeg(1200, 800), resize=Resize(width=600))
    assert (f["region_x"], f["region_y"], f["region_w"], f["region_h"]) == (0, 0, 1200, 800)
    assert f["crop_by"] is None
    assert f["scale"] == pytest.approx(0.5)


def test_trim_box_is_inside_the_master_and_is_the_region():
    f = render_one(jpeg(600, 600, border=200), trim={"threshold": 10},
                   resize=Resize(width=500, height=500, fit="pad"))
    assert (f["source_width"], f["source_height"]) == (1000, 1000)
    assert f["trim_x"] > 0 and f["trim_y"] > 0
    assert f["trim_x"] + f["trim_w"] <= 1000 and f["trim_y"] + f["trim_h"] <= 1000
    assert f["trim_w"] < 1000
    assert (f["region_x"], f["region_w"]) == (f["trim_x"], f["trim_w"])
    assert f["crop_by"] is None


def test_encoder_text_names_the_saver_and_quality():
    f = render_one(jpeg(400, 400), resize=Resize(width=200), quality=77, progressive=True)
    assert f["encoder"] == ("jpegsave Q=77 optimize_coding=1 interlace=1 trellis_quant=1 "
                            "overshoot_deringing=1 quant_table=3 subsample_mode=on "
                            "optimize_scans=1")  # mozjpeg, 4:2:0
    f = render_one(jpeg(400, 400), resize=Resize(width=200), format="webp")
    assert f["encoder"].startswith("webpsave Q=80 ")


# -- no silent upscaling ----------------------------------------------------------------------

def test_upscale_never_fails_with_both_sizes():
    with pytest.raises(MasterError) as err:
        render_one(jpeg(300, 300), resize=Resize(width=2000, height=2000, fit="pad"),
                   upscale="never")
    message = str(err.value)
    assert "upscale" in message and "300x300" in message and "2000x2000" in message
    assert "at most 1x" in message


def test_upscale_factor_allows_up_to_it():
    f = render_one(jpeg(300, 300), resize=Resize(width=600), upscale=2.0)
    assert f["width"] == 600 and f["scale"] == pytest.approx(2.0)
    with pytest.raises(MasterError, match=r"upscale 300x300 to 900x900 \(3.00x, .*at most 2x"):
        render_one(jpeg(300, 300), resize=Resize(width=900), upscale=2.0)


def test_upscale_key_stays_out_of_the_recipe_at_its_default():
    plain = ImagePreset(format="jpeg", resize=Resize(width=10))
    assert "upscale" not in plain.recipe()
    assert ImagePreset(format="jpeg", resize=Resize(width=10), upscale="never").recipe()[
        "upscale"] == "never"


def config(tmp_path: Path, rules: str) -> Path:
    (tmp_path / "cfg/channels").mkdir(parents=True)
    (tmp_path / "cfg/presets").mkdir()
    (tmp_path / "cfg/presets/z.toml").write_text(
        '[zoom-2000]\nresize = { width = 2000, height = 2000, fit = "pad" }\nformat = "jpeg"\n')
    (tmp_path / "cfg/channels/zoom.toml").write_text(
        f'name = "zoom"\n[[outputs]]\nname = "main"\npreset = "zoom-2000"\n[rules]\n{rules}\n')
    return tmp_path / "cfg"


@pytest.mark.parametrize("skip", [False, True])
def test_a_channel_minimum_source_size_refuses_a_small_master(tmp_path, skip):
    masters = tmp_path / "masters"
    masters.mkdir()
    (masters / "small.jpg").write_bytes(jpeg(300, 300))
    (masters / "big.jpg").write_bytes(jpeg(1200, 1200))
    rules = "min_source_long_side = 1000" + ('\nbelow_min_source = "skip"' if skip else "")
    result = api.render(masters, tmp_path / "out", channels=["zoom"],
                        config_dir=config(tmp_path, rules))
    rows = {r["master_id"]: r for r in pq.read_table(tmp_path / "out/manifest.parquet")
            .to_pylist()}
    assert rows["big"]["status"] == "ok" and rows["big"]["source_width"] == 1200
    small = rows["small"]
    assert "upscale 300x300 to 2000x2000" in small["error"] and "1000" in small["error"]
    assert small["path"] is None
    if skip:
        assert small["status"] == Status.NOT_APPLICABLE == "n/a"
        assert result.exit_code == 0
        again = api.render(masters, tmp_path / "out", channels=["zoom"],
                           config_dir=config(tmp_path / "2", rules))
        assert again.exit_code == 0
        rows = {r["master_id"]: r for r in pq.read_table(tmp_path / "out/manifest.parquet")
                .to_pylist()}
        assert rows["small"]["status"] == "n/a" and rows["big"]["status"] == "skipped"
    else:
        assert small["status"] == "failed" and result.exit_code == 1


# -- video ------------------------------------------------------------------------------------

def clip(path: Path, width: int, height: int, video_s: float, audio_s: float) -> Path:
    """An H.264 + AAC MP4 whose audio may outlast its picture."""
    fps = 25
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=48000, layout="stereo")
        for i in range(round(video_s * fps)):
            rgb = np.full((height, width, 3), (i * 5) % 255, np.uint8)
            rgb[: height // 2, : width // 2] = (200, 40, 40)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        samples = 1024
        for i in range(round(audio_s * 48000 / samples)):
            t = (np.arange(samples) + i * samples) / 48000
            tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]).reshape(1, -1),
                                               format="flt", layout="stereo")
            frame.sample_rate, frame.pts = 48000, i * samples
            out.mux(a.encode(frame))
        out.mux(a.encode(None))
    return path


def container_duration(path: Path) -> float:
    with av.open(str(path)) as c:
        return c.duration / av.time_base


@pytest.mark.slow
def test_video_rows_have_region_scale_and_the_player_duration(tmp_path):
    from engine.video.decode_pass import render_video

    master = clip(tmp_path / "m.mp4", 640, 360, video_s=1.0, audio_s=2.0)
    assert container_duration(master) > 1.8
    fill = VideoPreset(kind="video", resize=Resize(width=180, height=180, fit="fill",
                                                   gravity="west"), crf=35)
    fit = VideoPreset(kind="video", resize=Resize(width=320), crf=35)
    done = render_video(master.read_bytes(), {"fill": fill, "fit": fit}, [], tmp_path)
    f = _facts(done.results["fill"])
    assert (f["source_width"], f["source_height"]) == (640, 360)
    assert (f["region_x"], f["region_y"], f["region_w"], f["region_h"]) == (0, 0, 360, 360)
    assert f["scale"] == pytest.approx(0.5) and f["crop_by"] == "west"
    assert f["encoder"].startswith("libx264 ") and "crf=35" in f["encoder"]
    assert "aac" in f["encoder"]
    g = _facts(done.results["fit"])
    assert (g["region_w"], g["region_h"], g["crop_by"]) == (640, 360, None)
    assert g["scale"] == pytest.approx(0.5)
    for facts, name in ((f, "fill"), (g, "fit")):
        out = done.results[name].path
        assert facts["duration_s"] == pytest.approx(container_duration(out), abs=0.01)
        assert container_duration(out) > 1.8  # the audio's length, not the picture's 1 s


@pytest.mark.slow
def test_ladder_has_no_rung_above_the_master(tmp_path):
    from engine.video.decode_pass import render_video

    master = clip(tmp_path / "m.mp4", 320, 180, video_s=0.6, audio_s=0.6)
    ladder = VideoPreset(kind="video", resize=Resize(width=1920, height=1080), ladder=[
        Rung(name="1080p", width=1920, height=1080, bitrate_kbps=6000),
        Rung(name="720p", width=1280, height=720, bitrate_kbps=3000),
        Rung(name="360p", width=640, height=360, bitrate_kbps=400),
        Rung(name="144p", width=256, height=144, bitrate_kbps=100)])
    rungs = dict(ladder.rungs())
    done = render_video(master.read_bytes(), rungs, [], tmp_path)
    for name in ("1080p", "720p"):
        assert isinstance(done.results[name], NotApplicable)
        assert "320x180" in str(done.results[name])
    top = done.results["360p"]  # the smallest rung above the master: made at its own size
    assert (top.facts.width, top.facts.height) == (320, 180)
    assert _facts(top)["scale"] == pytest.approx(1.0)
    assert (done.results["144p"].facts.width, done.results["144p"].facts.height) == (256, 144)
    upscale = VideoPreset(kind="video", resize=Resize(width=640, height=360), upscale="never")
    refused = render_video(master.read_bytes(), {"u": upscale}, [], tmp_path)
    assert "would upscale 320x180 to 640x360" in str(refused.results["u"])
    assert not isinstance(refused.results["u"], NotApplicable)

