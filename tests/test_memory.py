"""A task's memory stays bounded: measured as the peak resident size of a fresh process.

Each case renders in its own Python process (so earlier tests cannot hide or inflate its peak)
and reads its peak resident size (VmHWM) at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pyvips
from helpers import channel_toml, write_config

from engine.demo import product_video

pytestmark = pytest.mark.slow  # peak memory of fresh processes

SCRIPT = textwrap.dedent("""
    import json, sys

    def hwm_kb():  # VmHWM: this process's peak, reset by exec (ru_maxrss is not: a child of a
        # big pytest process would start at its parent's peak and show nothing added)
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

    from engine import api
    import pyvips, av  # libraries loaded: count only what rendering adds
    before = hwm_kb()
    result = api.render(sys.argv[1], sys.argv[2], channels=sys.argv[3].split(","),
                        scheduler="sync", config_dir=sys.argv[4] if len(sys.argv) > 4 else None)
    peak = hwm_kb()
    print(json.dumps({"exit": result.exit_code, "before_mb": before / 1024,
                      "peak_mb": peak / 1024, "rows": len(result.rows)}))
""")


def peak(catalog: Path, out: Path, channels: str, *config: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(catalog), str(out), channels,
                           *map(str, config)],
                          capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_huge_jpeg_is_never_decoded_at_full_size(tmp_path):
    """A 12000x9000 (108 MP, 324 MB as 8-bit RGB) master for 600/1200 wide email images:
    shrink-on-load decodes it at 1/4, so the peak stays far below one full-size copy."""
    folder = tmp_path / "masters"
    folder.mkdir()
    big = pyvips.Image.xyz(12000, 9000)[0].cast("uchar").bandjoin([64, 128])
    big = big.copy(interpretation="srgb")
    big.jpegsave(str(folder / "huge.jpg"), Q=70)
    # Email's sizes at a fixed quality: the decode is measured, not quality = "auto"'s scoring
    # (a reference pyramid of the 1200 px output, about 120 MB more; test_quality_auto.py)
    config = tmp_path / "config"
    write_config(config, "presets", "e",
        '[e600]\nresize = { width = 600, fit = "fit" }\nformat = "jpeg"\nquality = 85\n'
        '[e1200]\nresize = { width = 1200, fit = "fit" }\nformat = "jpeg"\nquality = 85\n')
    write_config(config, "channels", "e", channel_toml("e", {"w600": "e600", "w1200": "e1200"}))
    stats = peak(folder, tmp_path / "out", "e", config)
    assert stats["exit"] == 0 and stats["rows"] == 2
    full_copy_mb = 12000 * 9000 * 3 / 2**20
    assert 0 < stats["peak_mb"] - stats["before_mb"] < full_copy_mb / 2, stats


def test_video_memory_does_not_grow_with_duration(tmp_path):
    """Frames stream through the pass: a clip three times longer peaks at about the same size
    (both long enough to fill the encoders' look-ahead, which is bounded)."""
    config = tmp_path / "config"
    write_config(config, "presets", "small",
        '[s1]\nkind = "video"\nresize = { width = 320, height = 180, fit = "fill" }\n'
        'speed = "ultrafast"\n'
        '[s2]\nkind = "video"\nresize = { width = 160, fit = "fit" }\nspeed = "ultrafast"\n'
        '[p]\nframe = "best"\nresize = { width = 200, fit = "fit" }\nformat = "jpeg"\n')
    write_config(config, "channels", "small",
        channel_toml("small", {"a": "s1", "b": "s2", "c": "p"}))
    peaks = {}
    for seconds in (4.0, 12.0):
        folder = tmp_path / f"m{seconds:g}"
        folder.mkdir()
        product_video(folder / "clip.mp4", 640, 360, seconds=seconds, noise=2)
        stats = peak(folder, tmp_path / f"out{seconds:g}", "small", config)
        assert stats["exit"] == 0 and stats["rows"] == 3
        peaks[seconds] = stats["peak_mb"] - stats["before_mb"]
    # 8 s more of 640x360 frames held anywhere would be 80 MB or more (240 x 0.35 MB)
    assert peaks[12.0] - peaks[4.0] < 30, peaks


@pytest.mark.parametrize("kind", ["image", "video"])
def test_the_estimated_peak_covers_the_measured_one(tmp_path, kind):
    """footprint.py's estimate (what the scheduler reserves for a master) is at least the peak a
    fresh process adds rendering it, and not wildly more (at most 2x): a 3000x2000 PNG (full
    decode) through web's AVIF/WebP/JPEG sizes up to 2560 px; a 960x540 clip for amazon (a
    1080p H.264 encode, its look-ahead the bulk of the peak, and a poster)."""
    from engine import api
    from engine.schedule import master_footprint

    folder = tmp_path / "masters"
    folder.mkdir()
    if kind == "image":
        noise = pyvips.Image.gaussnoise(3000, 2000, sigma=30, mean=128)
        noise.bandjoin([noise, noise]).cast("uchar").copy(interpretation="srgb").pngsave(
            str(folder / "m.png"), compression=1)
        channel = "web"
    else:
        product_video(folder / "clip.mp4", 960, 540, seconds=3.0, noise=2)
        channel = "amazon"
    plan = api.plan(folder, [channel])
    (mp,) = plan.masters
    estimate_mb = master_footprint(mp, plan.presets) / 2**20
    stats = peak(folder, tmp_path / "out", channel)
    assert stats["exit"] == 0
    added_mb = stats["peak_mb"] - stats["before_mb"]
    assert added_mb <= estimate_mb <= 2 * added_mb, (added_mb, estimate_mb)
