"""More of what real catalogs hold: odd bands, depths, colour spaces and shapes, each through
fill, fit, pad, trim and every output format."""

from __future__ import annotations

from pathlib import Path

import problem_images as P
import pytest
import pyvips
from helpers import LOADERS, load, mean_colour, read

from engine import api

# Every wild master through every built-in output: ~30 s.
pytestmark = pytest.mark.slow


def write_wild(folder: Path) -> None:
    s = P.scene()
    grey = s.colourspace("b-w")
    grey.bandjoin(255).copy(interpretation="b-w").pngsave(str(folder / "grey-alpha.png"))
    rgba16 = (s.cast("ushort") * 257).bandjoin(65535).cast("ushort")
    rgba16.copy(interpretation="rgb16").pngsave(str(folder / "rgba16.png"), bitdepth=16)
    s.pngsave(str(folder / "palette.png"), palette=True)
    cmyk = s.icc_transform("cmyk").bandjoin(255).copy(interpretation="cmyk")
    cmyk.tiffsave(str(folder / "cmyk-alpha.tif"))
    s.jpegsave(str(folder / "progressive.jpg"), interlace=True)
    broken = s.copy()
    broken.set_type(pyvips.GValue.blob_type, "icc-profile-data", b"not a profile" * 20)
    broken.jpegsave(str(folder / "broken-icc.jpg"), keep="icc")
    s.colourspace("scrgb").tiffsave(str(folder / "scrgb.tif"))
    (grey > 128).tiffsave(str(folder / "bilevel.tif"), bitdepth=1)
    s.heifsave(str(folder / "avif-master.avif"), compression="av1")
    s.bandjoin(200).copy(interpretation="srgb").webpsave(str(folder / "alpha.webp"))
    s.icc_transform("p3").jpegsave(str(folder / "display-p3.jpg"), keep="icc")
    pyvips.Image.black(1, 1, bands=3).add(128).cast("uchar").copy(
        interpretation="srgb").pngsave(str(folder / "tiny.png"))
    P.scene(4000, 60).jpegsave(str(folder / "panorama.jpg"))


COLOURFUL = ["grey-alpha", "rgba16", "palette", "cmyk-alpha", "progressive", "broken-icc",
             "scrgb", "avif-master", "alpha", "display-p3"]


@pytest.fixture(scope="module")
def wild_run(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("wild") / "masters"
    folder.mkdir()
    write_wild(folder)
    out = folder.parent / "out"
    result = api.render(folder, out, channels=["email", "web", "amazon", "instagram"])
    return result, out


def test_every_wild_master_renders_through_every_output(wild_run):
    result, out = wild_run
    assert result.exit_code == 0, [(r["master_id"], r["error"]) for r in result.failed]
    config = api.load_config()
    for row in read(out).to_pylist():
        image = load(out / row["path"])
        assert image.get("vips-loader").startswith(LOADERS[row["format"]])
        assert image.interpretation == "srgb" and image.format == "uchar"
        r = config.presets[row["preset"]].resize
        if r.fit in ("fill", "pad"):
            assert (image.width, image.height) == (r.width, r.height), row["path"]


def test_wild_colours_survive(wild_run):
    _, out = wild_run
    for master in COLOURFUL:
        image = load(out / "email" / master / "w600.jpg")
        r, g, b = mean_colour(image, 0.25, 0.25)
        if master == "grey-alpha":
            assert abs(r - g) < 3 and abs(g - b) < 3
        else:
            assert r > 150 and b < 100, (master, r, g, b)  # the red block, top-left
            assert mean_colour(image, 0.75, 0.75)[2] > 120, master  # the blue field
