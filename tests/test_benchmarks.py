"""The benchmark's fairness check: it must tell a worse encode from an equal one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyvips

from benchmarks import peers


def _scene(path: Path) -> pyvips.Image:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([(x * 0.8) % 255, (y * 1.1) % 255, ((x + y) * 0.5) % 255], axis=-1)
    rgb += rng.normal(0, 18, rgb.shape)  # texture, so JPEG quality shows in SSIM
    image = pyvips.Image.new_from_array(np.clip(rgb, 0, 255).astype(np.uint8))
    image = image.copy(interpretation="srgb")
    image.pngsave(str(path))
    return image


def test_ssim_is_one_for_the_same_pixels_and_falls_with_quality(tmp_path: Path) -> None:
    image = _scene(tmp_path / "ref.png")
    image.jpegsave(str(tmp_path / "q95.jpg"), Q=95)
    image.jpegsave(str(tmp_path / "q20.jpg"), Q=20)
    image.crop(0, 0, 300, 240).pngsave(str(tmp_path / "smaller.png"))

    assert peers.ssim(tmp_path / "ref.png", tmp_path / "ref.png") == pytest.approx(1.0, abs=1e-6)
    q95 = peers.ssim(tmp_path / "q95.jpg", tmp_path / "ref.png")
    q20 = peers.ssim(tmp_path / "q20.jpg", tmp_path / "ref.png")
    assert 0.9 < q95 < 1.0
    assert q20 < q95 - 0.05
    assert peers.ssim(tmp_path / "smaller.png", tmp_path / "ref.png") is None


def test_fairness_passes_similar_bytes_and_flags_a_worse_encode(tmp_path: Path) -> None:
    image = _scene(tmp_path / "scene.png")
    for folder in ("ours", "same", "worse", "ref-ours", "ref-worse"):
        (tmp_path / folder).mkdir()
    name = "m--r.jpg"
    image.jpegsave(str(tmp_path / "ours" / name), Q=85)
    image.jpegsave(str(tmp_path / "same" / name), Q=85)
    image.jpegsave(str(tmp_path / "worse" / name), Q=15)
    for ref in ("ref-ours", "ref-worse"):
        image.pngsave(str(tmp_path / ref / f"{name}.png"))
    jobs = [{"master": "m.png", "id": "m", "outputs": [{"name": name}]}]
    ours = {name: tmp_path / "ours" / name}

    report, unsure = peers.compare(jobs, ours, tmp_path / "same")
    assert report["same_size_and_format"] == 1 and not unsure
    assert report["similar_quality"] == "1/1"

    report, unsure = peers.compare(jobs, ours, tmp_path / "worse")
    assert unsure == {name}  # far fewer bytes: its quality must be looked at
    checked = peers.ssim_check(report, unsure, ours, tmp_path / "worse",
                               (tmp_path / "ref-ours", tmp_path / "ref-worse"), {})
    assert checked["ssim_checked"] == 1 and checked["ssim_within_001"] == 0
    assert checked["similar_quality"] == "0/1"
    assert checked["ssim_delta_median"] < -0.01
    assert name in checked["not_similar"][0]


def test_lossless_references_keep_alpha_only_where_the_output_does() -> None:
    jobs = [{"master": "m.png", "id": "m", "outputs": [
        {"name": "a.jpg", "format": "jpeg", "keep_alpha": True, "max_bytes": 50_000},
        {"name": "b.webp", "format": "webp", "keep_alpha": True, "max_bytes": None},
        {"name": "c.webp", "format": "webp", "keep_alpha": False, "max_bytes": None}]}]
    cut = peers.lossless_jobs(jobs, {"a.jpg", "b.webp"})
    outputs = cut[0]["outputs"]
    assert [o["name"] for o in outputs] == ["a.jpg.png", "b.webp.png"]
    assert all(o["format"] == "png" and o["max_bytes"] is None for o in outputs)
    assert [o["keep_alpha"] for o in outputs] == [False, True]
    assert peers.lossless_jobs(jobs, set()) == []


def test_sharp_is_the_current_release_where_node_runs_it(tmp_path: Path) -> None:
    assert peers._sharp_version_for((22, 1, 0)) == peers.SHARP_VERSION
    assert peers._sharp_version_for((20, 9, 0)) == peers.SHARP_VERSION
    assert peers._sharp_version_for((20, 8, 1)) == peers.SHARP_FOR_OLD_NODE[0]
    assert peers._sharp_version_for((18, 19, 0)) == peers.SHARP_FOR_OLD_NODE[0]
    module = tmp_path / "sharp"
    assert peers._installed_version(module) is None  # not installed: setup installs it
    module.mkdir()
    (module / "package.json").write_text(json.dumps({"name": "sharp", "version": "0.34.5"}))
    assert peers._installed_version(module) == "0.34.5"  # another version: setup replaces it


def test_engine_overhead_tells_the_tail_from_the_overhead_of_busy_time() -> None:
    """Two workers over 10 s of wall time (20 worker-seconds): worker a ran two masters until
    9 s, worker b one until 5 s; the rows say 12 s of decode and render. Tail: b idle from 5
    to 9 s = 4 s (20%); overhead 40%; of the 16 s workers had work, 4 s were not pixels (25%).
    """
    from benchmarks.__main__ import engine_overhead

    rows = [{"master_id": m, "recipe_hash": "r", "status": "ok", "decode_ms": 1000.0,
             "render_ms": ms} for m, ms in (("m1", 3000.0), ("m2", 3000.0), ("m3", 3000.0))]
    spans = {"k1": [0.5, 4.5, "a"], "k2": [4.6, 9.0, "a"], "k3": [0.5, 5.0, "b"]}
    assert engine_overhead(rows, 10.0, 2, spans) == {
        "overhead_pct": 40.0, "tail_idle_pct": 20.0, "busy_overhead_pct": 25.0}
    # a worker that never ran a task idles from the first start to the last end
    assert engine_overhead(rows, 10.0, 3, spans)["tail_idle_pct"] == round(
        100 * (4.0 + 8.5) / 30, 2)


def test_the_task_counts_the_cpu_of_libvips_threads_and_of_child_processes() -> None:
    """CPU an operation: libvips' own threads (the Python thread only waits for them) and a
    peer's processes count; a waiting thread does not."""
    from benchmarks.task_op import ops_per_s

    image = pyvips.Image.gaussnoise(1500, 1500)

    def libvips_op() -> None:
        image.gaussblur(4).avg()  # computed on libvips' worker threads

    rate, cpu_ms = ops_per_s(libvips_op, 4, 1)
    wall_ms = 1000 / rate
    assert 0.3 * wall_ms < cpu_ms < 2.5 * wall_ms

    def child_op() -> None:
        subprocess.run([sys.executable, "-c", "sum(i * i for i in range(2_000_000))"],
                       check=True)

    rate, cpu_ms = ops_per_s(child_op, 2, 1)
    assert 0.5 * (1000 / rate) < cpu_ms < 1.5 * (1000 / rate)


@pytest.mark.parametrize("contender", ["engine", "naive-pyvips"])
def test_the_python_contenders_of_sharps_task_run_in_a_process_of_their_own(
        tmp_path: Path, contender: str) -> None:
    _scene(tmp_path / "scene.png").resize(4.5).jpegsave(str(tmp_path / "master.jpg"), Q=90)
    done = subprocess.run([sys.executable, "-m", "benchmarks.task_op", contender,
                           str(tmp_path / "master.jpg"), "3", "2", "--keep",
                           str(tmp_path / "out.jpg")], capture_output=True, text=True,
                          check=True)
    figure = json.loads(done.stdout.strip().splitlines()[-1])
    out = pyvips.Image.new_from_file(str(tmp_path / "out.jpg"))
    assert (out.width, out.height, out.get("vips-loader")) == (720, 588, "jpegload")
    assert figure["bytes"] == (tmp_path / "out.jpg").stat().st_size
    assert figure["ops_per_s"] > 0 and figure["cpu_ms_per_op"] > 0


@pytest.mark.parametrize("way", ["pathset", "sets"])
def test_check_paths_benchmark_runs_both_ways(way: str) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.check_paths", "--paths", "2500",
                           "--way", way], capture_output=True, text=True, check=True)
    figure = json.loads(done.stdout.strip().splitlines()[-1])
    assert figure["way"] == way and figure["paths"] == 2500 and figure["peak_rss_mb"] > 0


@pytest.mark.slow  # renders two masters through the web channel (~5 s)
def test_gallery_scale_benchmark_builds_a_real_shop_and_runs_both_ways(tmp_path: Path) -> None:
    from engine import api

    done = subprocess.run([sys.executable, "-m", "benchmarks.gallery_scale", "--products", "3",
                           "--work", str(tmp_path)], capture_output=True, text=True, check=True)
    figure = json.loads(done.stdout.strip().splitlines()[-1])
    assert figure["products"] == 3 and figure["manifest_rows"] > 6
    assert figure["streamed"]["peak_rss_mb"] > 0 and figure["whole"]["peak_rss_mb"] > 0
    out = tmp_path / "gallery-3"
    doc = json.loads(api.gallery(out, "https://cdn.example.com/shop"))
    assert [p["id"] for p in doc["products"]] == ["s0000000-P", "s0000001-P", "s0000002-P"]
    for product in doc["products"]:  # each copy's files are there, under its own folder
        assert [i["position"] for i in product["images"]] == [0, 1]
        for image in product["images"]:
            path = image["src"].removeprefix("https://cdn.example.com/shop/")
            assert path.startswith(product["id"][:8] + "/") and (out / path).is_file()
