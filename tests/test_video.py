"""Video masters: one decode pass to every video output, preview and poster.

Clips are made in code (engine.demo.product_video): a product moving over a gradient with film
grain, a red mark at the top left, white flash frames with a beep at the same instants.
"""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import channel_toml, load, mean_colour, read, write_config

from engine.cli import main
from engine.demo import product_video
from engine.spec import load_config
from engine.video.probe import describe_output

pytestmark = pytest.mark.slow  # video encodes

PRESETS = """
[v-story]
kind = "video"
resize = { width = 180, height = 320, fit = "fill" }
crf = 30
speed = "veryfast"
fps_max = 30

[v-square]
kind = "video"
resize = { width = 240, height = 240, fit = "pad" }
background = "#00ff00"
codec = "hevc"
crf = 32
speed = "ultrafast"

[v-webm]
kind = "video"
format = "webm"
resize = { width = 160, fit = "fit" }
crf = 40
speed = "8"

[v-av1]
kind = "video"
format = "webm"
codec = "av1"
resize = { width = 160, height = 160, fit = "fit" }
audio = "none"
speed = "12"

[v-trim]
kind = "video"
resize = { width = 200, fit = "fit" }
max_duration_s = 1.0
fps_max = 15
audio = "none"
speed = "veryfast"

[v-clip]
kind = "video"
resize = { width = 160, fit = "fit" }
start_s = 0.5
max_duration_s = 0.5
audio = "none"
speed = "veryfast"

[v-gif]
kind = "video"
format = "gif"
resize = { width = 120, fit = "fit" }
fps_max = 10
max_duration_s = 1.5

[v-awebp]
kind = "video"
format = "webp"
resize = { width = 120, fit = "fit" }
fps_max = 10
max_duration_s = 1.5

[v-ladder]
kind = "video"
resize = { width = 640, height = 360, fit = "fit" }
speed = "veryfast"
audio_bitrate_kbps = 64
ladder = [
  { name = "360p", width = 640, height = 360, bitrate_kbps = 900, maxrate_kbps = 990 },
  { name = "270p", width = 480, height = 270, bitrate_kbps = 500, maxrate_kbps = 550 },
  { name = "180p", width = 320, height = 180, bitrate_kbps = 250, maxrate_kbps = 275 },
]

[p-best]
frame = "best"
resize = { width = 200, fit = "fit" }
format = "png"

[p-at]
frame = 1.0
resize = { width = 100, height = 100, fit = "fill" }
format = "jpeg"

[img-thumb]
resize = { width = 64, fit = "fit" }
format = "jpeg"
"""

CHANNEL = channel_toml("vt", {
    "story": "v-story", "square": "v-square", "webm": "v-webm", "av1": "v-av1",
    "trim": "v-trim", "clip": "v-clip", "gif": "v-gif", "awebp": "v-awebp",
    "poster": "p-best", "at1": "p-at", "thumb": "img-thumb",
})
LADDER = channel_toml("ladder", {"hls": "v-ladder"})
# The same recipe in a second channel: rendered once, written to both places.
TWIN = channel_toml("twin", {"story": "v-story"})


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videoconf")
    write_config(root, "presets", "video", PRESETS)
    for name, text in (("vt", CHANNEL), ("ladder", LADDER), ("twin", TWIN)):
        write_config(root, "channels", name, text)
    return root


def render(catalog: Path, out: Path, config_dir: Path, *channels: str) -> tuple[int, list[dict]]:
    args = ["render", str(catalog), "--out", str(out), "--config-dir", str(config_dir),
            "--no-progress"]
    for c in channels:
        args += ["--channel", c]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, read(out).to_pylist()


def by_output(rows: list[dict], master: str) -> dict[str, dict]:
    return {r["output"]: r for r in rows if r["master_id"] == master}


def moov_before_mdat(path: Path) -> bool:
    """Top-level MP4 boxes in order: faststart puts the index (moov) before the media (mdat)."""
    data = path.read_bytes()
    order, at = [], 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8:at + 16])[0]
        order.append(kind.decode("latin-1"))
        if size < 8:
            break
        at += size
    return "moov" in order and "mdat" in order and order.index("moov") < order.index("mdat")


def first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, config_dir: Path):
    root = tmp_path_factory.mktemp("video")
    masters = root / "masters"
    masters.mkdir()
    product_video(masters / "clip.mp4", 320, 180, seconds=2.0, flashes=(0.5, 1.5), noise=4)
    product_video(masters / "silent.mp4", 320, 180, seconds=1.0, audio=False, noise=4)
    product_video(masters / "phone.mp4", 320, 180, seconds=1.0, rotation=90, noise=4)
    product_video(masters / "odd.mp4", 322, 182, seconds=1.0, noise=4, vfr=True)
    out = root / "out"
    code, rows = render(masters, out, config_dir, "vt", "twin")
    return code, rows, out, masters


def test_every_output_has_its_size_duration_and_codecs(rendered):
    code, rows, out, _ = rendered
    assert code == 0, [r["error"] for r in rows if r["status"] == "failed"]
    clip = by_output(rows, "clip")
    expected = {  # output: (format, width, height, video codec, audio codec, duration)
        "story": ("mp4", 180, 320, "h264", "aac", 2.0),
        "square": ("mp4", 240, 240, "hevc", "aac", 2.0),
        "webm": ("webm", 160, 90, "vp9", "opus", 2.0),
        "av1": ("webm", 160, 90, "av1", None, 2.0),
        "trim": ("mp4", 200, 112, "h264", None, 1.0),
        "clip": ("mp4", 160, 90, "h264", None, 0.5),
    }
    for name, (fmt, w, h, vcodec, acodec, duration) in expected.items():
        row = clip[name]
        facts = describe_output(out / row["path"], fmt)  # read back from the file itself
        assert (facts.format, facts.width, facts.height) == (fmt, w, h), name
        assert (row["width"], row["height"], row["format"]) == (w, h, fmt), name
        assert facts.video_codec == vcodec == row["video_codec"], name
        assert facts.audio_codec == acodec == row["audio_codec"], name
        assert abs(facts.duration_s - duration) <= 1 / 30 + 1e-3, (name, facts.duration_s)
        assert row["duration_s"] == pytest.approx(facts.duration_s, abs=1e-3)
        assert row["bitrate"] == facts.bitrate and row["quality"] is None
        assert row["master_kind"] == "video"
    assert describe_output(out / clip["trim"]["path"], "mp4").fps == pytest.approx(15, rel=0.02)
    for name in ("story", "square", "trim", "clip"):
        assert moov_before_mdat(out / clip[name]["path"]), name
    # Padding is in the preset's colour; the fill crop covers the whole frame.
    square = first_frame(out / clip["square"]["path"])
    assert square[5, 120, 1] > 200 and square[5, 120, 0] < 60  # green bars above and below


def test_animated_previews_have_their_frames_and_timing(rendered):
    _, rows, out, _ = rendered
    clip = by_output(rows, "clip")
    for name, fmt in (("gif", "gif"), ("awebp", "webp")):
        image = load(out / clip[name]["path"])
        assert image.get("vips-loader") == f"{fmt}load"
        facts = describe_output(out / clip[name]["path"], fmt)
        assert (facts.width, facts.height) == (120, 68)
        assert facts.frames == 15  # 10 fps x 1.5 s
        assert facts.duration_s == pytest.approx(1.5, abs=0.05)


def test_posters_come_from_the_same_pass_through_the_image_pipeline(rendered):
    _, rows, out, _ = rendered
    clip = by_output(rows, "clip")
    best = load(out / clip["poster"]["path"])
    assert (best.width, best.height) == (200, 112)
    assert best.interpretation == "srgb" and best.get("vips-loader") == "pngload"
    assert 40 < best.avg() < 220  # not a flash frame, not black
    assert np.linalg.norm(mean_colour(best, 0.03, 0.05) - (255, 0, 0)) < 70  # red mark upright
    at1 = load(out / clip["at1"]["path"])
    assert (at1.width, at1.height) == (100, 100)
    # the frame at 1.0 s is an ordinary frame; the flash is at 1.5 s
    assert at1.avg() < 230
    # image presets without `frame` do not apply to video masters
    assert "thumb" not in clip


def test_silent_master_gives_silent_outputs(rendered):
    _, rows, out, _ = rendered
    silent = by_output(rows, "silent")
    assert silent["story"]["status"] == "ok" and silent["story"]["audio_codec"] is None
    with av.open(str(out / silent["story"]["path"])) as c:
        assert not c.streams.audio


def test_phone_rotation_is_honoured(rendered):
    _, rows, out, _ = rendered
    phone = by_output(rows, "phone")
    # stored 180x320 sideways, displayed 320x180: every output is upright and landscape
    assert (phone["webm"]["width"], phone["webm"]["height"]) == (160, 90)
    frame = first_frame(out / phone["webm"]["path"])
    assert frame[4, 6, 0] > 170 and frame[4, 6, 1] < 90  # the red mark is at the top left
    assert frame[-5, -6, 0] < 170 or frame[-5, -6, 1] > 90
    poster = load(out / phone["poster"]["path"])
    assert poster.width > poster.height
    assert np.linalg.norm(mean_colour(poster, 0.03, 0.05) - (255, 0, 0)) < 70


def test_variable_frame_rate_and_odd_sizes(rendered):
    _, rows, out, _ = rendered
    odd = by_output(rows, "odd")  # 322x182, frames spaced 2, 4, 4, 2, 4, 4 ... hundredths
    for name in ("story", "webm", "trim"):
        facts = describe_output(out / odd[name]["path"], odd[name]["format"])
        assert facts.width % 2 == 0 and facts.height % 2 == 0, name
    with av.open(str(out / odd["webm"]["path"])) as c:  # no fps cap on this output
        times = [float(f.time) for f in c.decode(video=0)]
    master_times = []
    with av.open(str(out.parent / "masters" / "odd.mp4")) as c:
        master_times = [float(f.time) for f in c.decode(video=0)]
    assert len(times) == len(master_times)  # every frame kept, none duplicated
    gaps = np.diff(times)
    assert gaps.max() / gaps.min() > 1.5  # the uneven spacing is kept, not flattened
    master = describe_output(out.parent / "masters" / "odd.mp4", "mp4")
    for name in ("story", "webm"):
        facts = describe_output(out / odd[name]["path"], odd[name]["format"])
        assert abs(facts.duration_s - master.duration_s) <= 1 / 25, name


def test_identical_recipes_across_channels_are_encoded_once(rendered):
    _, rows, out, _ = rendered
    vt = by_output([r for r in rows if r["channel"] == "vt"], "clip")["story"]
    twin = by_output([r for r in rows if r["channel"] == "twin"], "clip")["story"]
    assert vt["recipe_hash"] == twin["recipe_hash"] and vt["sha256"] == twin["sha256"]
    assert (out / vt["path"]).read_bytes() == (out / twin["path"]).read_bytes()


def test_audio_and_video_stay_in_sync(rendered):
    _, rows, out, _ = rendered
    path = out / by_output(rows, "clip")["story"]["path"]
    with av.open(str(path)) as c:
        flashes = [float(f.time) for f in c.decode(video=0)
                   if f.to_ndarray(format="gray").mean() > 200]
    with av.open(str(path)) as c:
        loud = []
        for f in c.decode(audio=0):
            samples = f.to_ndarray()
            if np.abs(samples).max() > 0.3:
                loud.append(float(f.time))
    onsets = [t for i, t in enumerate(loud) if i == 0 or t - loud[i - 1] > 0.3]
    assert len(flashes) == 2 and len(onsets) == 2
    for flash, beep in zip(flashes, onsets, strict=True):
        assert abs(flash - beep) <= 1 / 30 + 1024 / 48000, (flash, beep)


def test_late_timestamps_start_at_zero_and_stay_in_sync(tmp_path, config_dir):
    """An MPEG-TS master whose clock starts at 10 s: outputs start at 0, sound with picture."""
    masters = tmp_path / "masters"
    masters.mkdir()
    product_video(masters / "late.ts", 320, 180, seconds=1.5, flashes=(0.5,), noise=2,
                  start_s=10.0, container="mpegts")
    code, rows = render(masters, tmp_path / "out", config_dir, "twin")
    assert code == 0, rows[0]["error"]
    path = tmp_path / "out" / rows[0]["path"]
    assert abs(rows[0]["duration_s"] - 1.5) <= 1 / 30 + 1e-3
    with av.open(str(path)) as c:
        flash = [float(f.time) for f in c.decode(video=0)
                 if f.to_ndarray(format="gray").mean() > 200]
    with av.open(str(path)) as c:
        beep = next(float(f.time) for f in c.decode(audio=0) if np.abs(f.to_ndarray()).max() > 0.3)
    assert flash and abs(flash[0] - 0.5) <= 1 / 30 + 1e-3
    assert abs(flash[0] - beep) <= 1 / 30 + 1024 / 48000, (flash, beep)


def test_ladder_rungs_are_rows_with_bitrates_near_target(tmp_path, config_dir):
    masters = tmp_path / "masters"
    masters.mkdir()
    product_video(masters / "grainy.mp4", 640, 360, seconds=3.0, noise=14)
    code, rows = render(masters, tmp_path / "out", config_dir, "ladder")
    assert code == 0
    got = {r["output"]: r for r in rows}
    assert set(got) == {"hls-360p", "hls-270p", "hls-180p"}
    for name, (w, h, kbps) in {"hls-360p": (640, 360, 900), "hls-270p": (480, 270, 500),
                               "hls-180p": (320, 180, 250)}.items():
        row = got[name]
        assert (row["width"], row["height"]) == (w, h)
        assert row["bitrate"] == pytest.approx(kbps * 1000, rel=0.15), name
        assert row["audio_codec"] == "aac"
        assert abs(row["duration_s"] - 3.0) <= 1 / 30


def test_real_world_kinds_through_every_builtin_video_output(tmp_path):
    """H.264/AAC MP4, VP8/Vorbis WebM and WebM without audio, through the built-in channels."""
    masters = tmp_path / "masters"
    masters.mkdir()
    product_video(masters / "h264.mp4", 320, 180, seconds=1.0, noise=2)
    product_video(masters / "vp8.webm", 320, 180, seconds=1.0, noise=2, codec="libvpx",
                  audio_codec="vorbis", container="webm")
    product_video(masters / "mute.webm", 320, 180, seconds=1.0, noise=2, codec="libvpx-vp9",
                  audio=False, container="webm")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["render", str(masters), "--out", str(out),
                                       "--no-progress"], catch_exceptions=False)
    rows = read(out).to_pylist()
    assert result.exit_code == 0, [r["error"] for r in rows if r["status"] == "failed"]
    config = load_config()
    presets = {name: p for name, p in config.presets.items()}
    video_outputs = {(c.name, o.name): presets[o.preset] for c in config.channels.values()
                     for o in c.outputs if presets[o.preset].master_kind == "video"}
    assert len(video_outputs) >= 8
    for master in ("h264", "vp8", "mute"):
        mine = {(r["channel"], r["output"]): r for r in rows if r["master_id"] == master}
        for (channel, output), preset in video_outputs.items():
            names = ([f"{output}-{r.name}" for r in preset.ladder]
                     if getattr(preset, "ladder", None) else [output])
            for name in names:
                row = mine[(channel, name)]
                if row["status"] == "n/a":  # a ladder rung above the 320x180 master
                    assert getattr(preset, "ladder", None) and "upscale" in row["error"], name
                    continue
                assert row["status"] == "ok", row["error"]
                if preset.kind == "image":
                    continue
                facts = describe_output(out / row["path"], row["format"])
                box = preset.resize if not preset.ladder else next(
                    r for r in preset.ladder if f"{output}-{r.name}" == name)
                if preset.ladder:  # never above the master: its own size tops the ladder
                    assert facts.width <= 320 and facts.height <= 180, name
                elif preset.resize.fit in ("fill", "pad"):
                    assert (facts.width, facts.height) == (box.width, box.height), name
                else:
                    assert facts.width <= (box.width or 10**6) and facts.height <= (
                        box.height or 10**6)
                    assert abs(facts.width / facts.height - 16 / 9) < 0.03, name
                limit = min(1.0, preset.max_duration_s or 1.0)
                assert abs(facts.duration_s - limit) <= 1 / 8 + 1e-3, (name, facts.duration_s)
                assert facts.video_codec == preset.effective_codec
                wants_audio = preset.effective_audio != "none" and master != "mute"
                assert (facts.audio_codec is not None) == wants_audio, (master, name)


def test_bad_videos_fail_alone_with_clear_errors(tmp_path, config_dir):
    masters = tmp_path / "masters"
    masters.mkdir()
    good = product_video(masters / "good.mp4", 320, 180, seconds=1.0, noise=2)
    data = good.read_bytes()
    (masters / "truncated.mp4").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[len(data) // 3: len(data) // 3 + 4000] = bytes(4000)
    corrupt[:4] = b"\x00\x00\x00\x20"
    (masters / "zeroed.mp4").write_bytes(bytes(corrupt[:64]))
    with av.open(str(masters / "audio-only.mp4"), "w") as c:  # no video stream at all
        s = c.add_stream("aac", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    with av.open(str(masters / "empty.mp4"), "w") as c:  # a video stream with no frames
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    code, rows = render(masters, tmp_path / "out", config_dir, "vt")
    assert code == 1
    errors = {r["master_id"]: r["error"] for r in rows if r["status"] == "failed"}
    assert set(errors) == {"truncated", "zeroed", "audio-only", "empty"}
    assert "truncated" in errors["truncated"] or "moov" in errors["truncated"]
    assert "no video stream" in errors["audio-only"]
    assert "no video" in errors["empty"]
    for master, error in errors.items():
        assert f"{master}.mp4" in error  # every error names its file
    good = [r for r in rows if r["master_id"] == "good"]
    assert good and all(r["status"] == "ok" for r in good)


def test_truncated_stream_with_its_index_first_is_an_error(tmp_path, config_dir):
    """A faststart file cut short still opens; the missing tail must fail, not pass as short."""
    masters = tmp_path / "masters"
    masters.mkdir()
    out = tmp_path / "first"
    product_video(masters / "long.mp4", 320, 180, seconds=3.0, noise=6)
    code, rows = render(masters, out, config_dir, "twin")
    assert code == 0
    fast = out / by_output(rows, "long")["story"]["path"]
    assert moov_before_mdat(fast)
    cut = tmp_path / "cut"
    cut.mkdir()
    data = fast.read_bytes()
    (cut / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    code, rows = render(cut, tmp_path / "out2", config_dir, "twin")
    assert code == 1
    assert "truncated" in rows[0]["error"] or "corrupt" in rows[0]["error"], rows[0]["error"]


def test_limits_refuse_absurd_videos_before_decoding(tmp_path):
    from engine.errors import MasterError
    from engine.video.probe import describe_source, open_master

    path = product_video(tmp_path / "big.mp4", 320, 180, seconds=0.5, noise=0)
    container = open_master(path.read_bytes())
    with pytest.raises(MasterError, match="over the limit of 1000 pixels"):
        describe_source(container, max_pixels=1000)
    with pytest.raises(MasterError, match="duration .* over the limit"):
        describe_source(container, max_duration_s=0.1)


def test_rerun_skips_unchanged_video_outputs(rendered, config_dir):
    code, rows, out, masters = rendered
    code, again = render(masters, out, config_dir, "vt", "twin")
    assert code == 0
    assert {r["status"] for r in again} == {"skipped"}
    assert len(again) == len(rows)
