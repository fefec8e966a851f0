"""`fanout demo`: the README's first command, checked the way a user would check it."""

import pytest
from click.testing import CliRunner
from helpers import load, mean_colour, read

from engine.cli import main
from engine.publish.feeds import url_problem

# The demo renders every built-in channel (quality = "auto" searches included): ~50 s.
pytestmark = pytest.mark.slow


def test_demo_renders_every_builtin_channel(demo_out):
    result, tmp_path = demo_out
    assert result.exit_code == 0, result.output
    for name in ("instagram", "amazon", "email", "mobile", "web", "manifest"):
        assert name in result.output
    rows = read(tmp_path / "out").to_pylist()
    assert rows and {r["status"] for r in rows} == {"ok", "n/a"}  # n/a: ladder rungs above
    na = [r for r in rows if r["status"] == "n/a"]  # the 640x360 clip's rungs above its size
    assert {r["output"] for r in na} >= {"video-1080p", "video-720p", "video-432p"}
    assert all(r["path"] is None for r in na)
    assert all("above the master" in r["error"] or "would upscale" in r["error"] for r in na)
    assert {r["channel"] for r in rows} == {"instagram", "amazon", "email", "mobile", "web"}
    assert {r["role"] for r in rows} == {"product", "editorial"}
    # the phone photo is stored sideways with EXIF orientation 6: its outputs are portrait
    mug = load(tmp_path / "out" / "email" / "mug-purple" / "w600.jpg")
    assert mug.height > mug.width
    # the CMYK master comes out sRGB and still yellow
    lamp = load(tmp_path / "out" / "amazon" / "LAMP-YELLOW.MAIN.jpg")
    assert lamp.interpretation == "srgb" and lamp.bands == 3
    r, g, b = mean_colour(lamp, 0.5, 0.4, size=40)
    assert r > 170 and g > 120 and b < 90, (r, g, b)


def test_a_google_feed_of_the_demo_lists_every_product_with_valid_urls(demo_out):
    _, folder = demo_out
    result = CliRunner().invoke(main, ["feed", "google", str(folder / "out"), "--base-url",
                                       "https://cdn.example.com/demo"])
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()[1:]]
    assert sorted(line[0] for line in lines) == ["BAG-GREEN", "LAMP-YELLOW", "MUG-PURPLE",
                                                 "SNEAKER-RED"]
    for _product, main_url, more in lines:
        for url in [main_url, *filter(None, more.split(","))]:
            assert url_problem(url, "jpeg") is None, url
    sneaker = next(line for line in lines if line[0] == "SNEAKER-RED")
    assert sneaker[2].endswith("/web/sneaker-red/side/zoom-jpeg.jpg")
