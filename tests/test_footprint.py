"""A master's estimated peak memory comes from its header alone, and follows what the render
will hold: the decoded copy after shrink-on-load, the largest encode, a video's encoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips
from problem_images import scene

from engine import api, footprint
from engine.demo import product_video
from engine.schedule import master_footprint


def estimate(folder: Path, channels: list[str]) -> int:
    plan = api.plan(folder, channels)
    (mp,) = plan.masters
    return master_footprint(mp, plan.presets)


def one(tmp_path: Path, name: str, write) -> Path:  # noqa: ANN001
    folder = tmp_path / name
    folder.mkdir()
    write(folder)
    return folder


def test_the_estimate_reads_the_header_only(tmp_path):
    """A PNG cut after its first 4 KB (no pixels to decode) gets the same estimate as the whole
    file, less the bytes it no longer has to read."""
    image = scene(4000, 3000)
    whole = one(tmp_path, "whole", lambda f: image.pngsave(str(f / "m.png"), compression=1))
    data = (whole / "m.png").read_bytes()
    cut = one(tmp_path, "cut", lambda f: (f / "m.png").write_bytes(data[:4096]))
    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_file(str(cut / "m.png"), fail=True).avg()
    difference = estimate(whole, ["email"]) - estimate(cut, ["email"])
    assert abs(difference - footprint.MARGIN * (len(data) - 4096)) < 4


def test_shrink_on_load_and_the_largest_output_decide_an_image(tmp_path):
    image = scene(6000, 4000)
    jpeg = one(tmp_path, "jpeg", lambda f: image.jpegsave(str(f / "m.jpg"), Q=80))
    png = one(tmp_path, "png", lambda f: image.pngsave(str(f / "m.png"), compression=1))
    # email's 1200 px JPEG: the JPEG decodes at 1/4 size, the PNG at full size
    per_pixel = 3 * footprint.DECODED_FACTOR * footprint.MARGIN
    assert estimate(png, ["email"]) - estimate(jpeg, ["email"]) > (
        6000 * 4000 - 1500 * 1000) * per_pixel
    # web's 2560 px AVIF costs more than email's 1200 px JPEG, from the same decoded copy
    assert estimate(jpeg, ["web"]) > estimate(jpeg, ["email"]) + 100 * 2**20


def test_a_video_costs_its_encoders_at_their_output_size(tmp_path):
    clip = one(tmp_path, "clip", lambda f: product_video(f / "clip.mp4", 640, 360, seconds=0.5))
    amazon = estimate(clip, ["amazon"])  # one 1920x1080 H.264 encoder and a poster
    email = estimate(clip, ["email"])  # a 320 px GIF and a poster
    encoder_1080p = footprint.ENCODER_BYTES_PER_PIXEL * 1920 * 1080
    assert amazon - email > encoder_1080p
    assert email < 200 * 2**20


def test_an_unreadable_master_gets_a_small_placeholder(tmp_path):
    junk = one(tmp_path, "junk", lambda f: (f / "m.jpg").write_bytes(b"\xff\xd8 not a jpeg"))
    plan = api.plan(junk, ["email"])
    (mp,) = plan.masters
    assert footprint.estimate(mp.master.path, "image",
                              [plan.presets[d.preset] for d in mp.derivatives]) == (
        footprint.UNREADABLE)


def test_a_size_the_last_run_recorded_needs_no_read(tmp_path):
    """With the previous rows' source size, the estimate reads nothing (a night of unchanged
    masters must not open a million files): the same model, less the file's own bytes."""
    image = scene(6000, 4000)
    jpeg = one(tmp_path, "jpeg", lambda f: image.jpegsave(str(f / "m.jpg"), Q=80))
    plan = api.plan(jpeg, ["web"])
    (mp,) = plan.masters
    presets = [plan.presets[d.preset] for d in mp.derivatives]
    read = footprint.estimate(mp.master.path, "image", presets)
    size = (jpeg / "m.jpg").stat().st_size
    (jpeg / "m.jpg").unlink()  # nothing left to read
    recorded = footprint.estimate(mp.master.path, "image", presets, known=(6000, 4000))
    assert abs(read - recorded - footprint.MARGIN * size) < 4
