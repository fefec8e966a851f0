"""HLS for video ladders (`hls = true`): a master playlist naming every rung, a media playlist
per rung over byte-range fMP4 segments cut at the preset's keyframes, every file a manifest row.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import av
import pytest
from helpers import channel_toml, read

from engine import api
from engine.demo import product_video
from engine.spec.models import VideoPreset

PRESETS = """
[ladder]
kind = "video"
resize = { width = 320, height = 180, fit = "fit" }
speed = "ultrafast"
keyframe_s = 1
fps_max = 30
audio_bitrate_kbps = 64
hls = true
ladder = [
  { name = "180p", width = 320, height = 180, bitrate_kbps = 400, maxrate_kbps = 440 },
  { name = "90p", width = 160, height = 90, bitrate_kbps = 150 },
]
"""
SECONDS = 3.2
FPS = 30


def attrs(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line)}


def test_hls_needs_a_ladder_in_mp4():
    base = {"kind": "video", "resize": {"width": 320}, "hls": True}
    with pytest.raises(ValueError, match="hls: expected a ladder"):
        VideoPreset.model_validate(base)
    rung = [{"name": "a", "width": 320, "bitrate_kbps": 300}]
    with pytest.raises(ValueError, match="format = 'webm'"):
        VideoPreset.model_validate({**base, "format": "webm", "ladder": rung})
    ok = VideoPreset.model_validate({**base, "ladder": rung})
    assert all(not p.hls for _, p in ok.rungs())  # rungs keep their recipe (and their hash)
    plain = VideoPreset.model_validate({**base, "hls": False, "ladder": rung})
    assert "hls" not in plain.recipe() and ok.recipe()["hls"] is True


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hls")
    (root / "conf" / "presets").mkdir(parents=True)
    (root / "conf" / "channels").mkdir()
    (root / "conf" / "presets" / "p.toml").write_text(PRESETS)
    (root / "conf" / "channels" / "shop.toml").write_text(channel_toml("shop", {"v": "ladder"}))
    (root / "masters").mkdir()
    product_video(root / "masters" / "clip.mp4", 320, 180, seconds=SECONDS, fps=FPS, noise=4)
    out = root / "out"
    return root, out, run(root, out)


def run(root: Path, out: Path, **options: object) -> api.RunResult:
    return api.render(root / "masters", out, config_dir=root / "conf", channels=["shop"],
                      scheduler="sync", **options)


@pytest.mark.slow
def test_every_hls_file_is_a_row_and_the_master_names_every_rung(rendered):
    _, out, result = rendered
    assert not result.failed, [r.error for r in result.failed]
    rows = {r["output"]: r for r in read(out).to_pylist()}
    assert set(rows) == {"v-180p", "v-90p", "v-hls", "v-hls-180p", "v-hls-90p",
                         "v-hls-180p-media", "v-hls-90p-media"}
    master = rows["v-hls"]
    assert master["path"] == "shop/clip/v-hls/master.m3u8" and master["format"] == "m3u8"
    assert rows["v-hls-90p"]["path"] == "shop/clip/v-hls/90p/index.m3u8"
    assert rows["v-hls-90p-media"]["path"] == "shop/clip/v-hls/90p/media.m4s"
    text = (out / master["path"]).read_text()
    assert master["bytes"] == len(text.encode())
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U" and any(x.startswith("#EXT-X-VERSION:") for x in lines)
    variants = [(attrs(x), lines[i + 1]) for i, x in enumerate(lines)
                if x.startswith("#EXT-X-STREAM-INF:")]
    assert [uri for _, uri in variants] == ["180p/index.m3u8", "90p/index.m3u8"]
    for (a, _), (size, kbps) in zip(variants, [("320x180", 400), ("160x90", 150)], strict=True):
        assert a["RESOLUTION"] == size
        assert re.fullmatch(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", a["CODECS"]), a["CODECS"]
        assert int(a["BANDWIDTH"]) >= int(a["AVERAGE-BANDWIDTH"]) > kbps * 1000 * 0.4
        assert float(a["FRAME-RATE"]) == pytest.approx(FPS)
    with av.open(str(out / rows["v-180p"]["path"])) as c:  # CODECS is the rung's own profile
        extra = bytes(c.streams.video[0].codec_context.extradata)
    assert variants[0][0]["CODECS"].startswith(f"avc1.{extra[1:4].hex()}")
    video = json.loads(api.gallery(out, "https://cdn.example.com/x", video_channel="shop")
                       )["products"][0]["videos"][0]
    assert video["sources"][0] == {"type": "application/vnd.apple.mpegurl",
                                   "src": "https://cdn.example.com/x/shop/clip/v-hls/master.m3u8",
                                   "width": 320, "height": 180}


@pytest.mark.slow
def test_media_playlists_are_standard_and_decode_to_the_full_duration(rendered):
    _, out, _ = rendered
    folder = out / "shop" / "clip" / "v-hls"
    for rung in ("180p", "90p"):
        lines = (folder / rung / "index.m3u8").read_text().splitlines()
        assert lines[0] == "#EXTM3U"
        version = int(next(x for x in lines if x.startswith("#EXT-X-VERSION:")).split(":")[1])
        assert version >= 6  # EXT-X-MAP without I-frames only; byte ranges need 4
        target = int(next(x for x in lines if x.startswith("#EXT-X-TARGETDURATION:"))
                     .split(":")[1])
        durations = [float(x.split(":")[1].rstrip(",").split(",")[0])
                     for x in lines if x.startswith("#EXTINF:")]
        assert durations and all(round(d) <= target for d in durations)
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in lines and lines[-1] == "#EXT-X-ENDLIST"
        assert any(x.startswith('#EXT-X-MAP:URI="media.m4s"') for x in lines)
        assert sum(x.startswith("#EXT-X-BYTERANGE:") for x in lines) == len(durations)
        assert all(abs(d - 1.0) < 0.05 for d in durations[:-1]), durations  # keyframe_s = 1
        assert sum(durations) == pytest.approx(SECONDS, abs=1 / FPS + 1e-3)
        with av.open(str(folder / rung / "index.m3u8")) as c:
            times = [float(f.time) for f in c.decode(video=0)]
        assert len(times) == round(SECONDS * FPS)
        assert times[-1] - times[0] + 1 / FPS == pytest.approx(SECONDS, abs=1 / FPS + 1e-3)
    with av.open(str(folder / "master.m3u8")) as c:  # the master opens every variant
        assert len(c.streams.video) == 2


@pytest.mark.slow
def test_check_is_clean_a_rerun_skips_and_a_removed_master_removes_the_set(rendered):
    root, out, _ = rendered
    checked = api.check(out)
    assert checked.problems == [] and checked.foreign == []
    assert checked.checked == 7
    again = run(root, out)
    assert not again.failed
    assert {r["status"] for r in read(out).to_pylist()} == {"skipped"}
    (out / "shop/clip/v-hls/90p/media.m4s").unlink()  # one file lost: the set is remade whole
    run(root, out)
    statuses = {r["output"]: r["status"] for r in read(out).to_pylist()}
    assert {o for o, s in statuses.items() if s == "ok"} == {
        "v-hls", "v-hls-180p", "v-hls-90p", "v-hls-180p-media", "v-hls-90p-media"}
    assert api.check(out).problems == []
    (root / "masters" / "clip.mp4").unlink()
    (root / "masters" / "other.mp4").write_bytes(b"")  # so the catalog is not empty
    gone = run(root, out, allow_removals=True)
    assert len(gone.removed) == 7
    assert not (out / "shop" / "clip").exists()
    assert math.isfinite(gone.wall_s)
