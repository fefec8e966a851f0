"""fanout's engine against the naive pipeline, side by side in one run on one machine.

Naive = what a sharp/pyvips script does: for every derivative, `pyvips.Image.thumbnail` from
the file (shrink-on-load for that one size), then the same crop/pad/trim steps and the same
savers. Both produce the same files (same sizes, formats, quality settings) from the same
catalog, with the same parallelism (one master per core, one libvips thread per master).

    python -m benchmarks.naive_vs_engine [--masters 24] [--repeat 3] [--channel NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyvips

from engine import api
from engine.demo import _to_image, lifestyle_scene, product_shot
from engine.geometry import layout
from engine.image import ops
from engine.image.decode import configure
from engine.image.encode import encode
from engine.spec.models import ImagePreset, parse_colour

WORK = Path(__file__).parent / "work"
COLOURS = [(200, 40, 40), (40, 70, 200), (30, 160, 90), (230, 180, 20), (120, 60, 160)]
SIZES = [(2000, 2000), (3000, 2000), (2400, 3200), (4000, 3000), (1600, 1600), (6000, 4000)]


def build_catalog(folder: Path, count: int) -> Path:
    """`count` masters: product shots (JPEG and PNG, 2.5 to 24 MP) and lifestyle scenes."""
    listing = folder / "catalog.csv"
    if listing.exists() and len(listing.read_text().splitlines()) == count + 1:
        return listing
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    lines = ["id,path,product,position,role"]
    for i in range(count):
        w, h = SIZES[i % len(SIZES)]
        if i % 6 == 5:
            name, role = f"scene-{i:02}.jpg", "editorial"
            _to_image(lifestyle_scene(w, h)).jpegsave(str(folder / name), Q=90)
        else:
            shape = "box" if i % 2 else "ellipse"
            image = _to_image(product_shot(w, h, COLOURS[i % len(COLOURS)], shape=shape))
            name, role = (f"product-{i:02}.png", "product") if i % 4 == 3 else (
                f"product-{i:02}.jpg", "product")
            image.write_to_file(str(folder / name), **({"Q": 92} if name.endswith("jpg") else {}))
        lines.append(f"m{i:02},{name},SKU{i // 3:02},{i % 3},{role}")
    listing.write_text("\n".join(lines) + "\n")
    return listing


def naive_derivative(path: str, preset: ImagePreset) -> bytes:
    """One derivative the naive way: thumbnail from the file, then the same finishing steps."""
    r = preset.resize
    background = parse_colour(preset.background)
    if preset.trim is not None:  # thumbnail cannot trim: load whole, trim, then thumbnail
        image = ops.to_srgb(ops.autorotate(pyvips.Image.new_from_file(path)))
        if not preset.has_alpha_output:
            image = ops.flatten(image, background)
        box = ops.trim_box(image, preset.trim.threshold)
        if box is not None:
            image = ops.crop(image, box)
        plan = layout(image.width, image.height, r)
        image = ops.resize_exact(image, *plan.scaled)
    else:
        header = pyvips.Image.new_from_file(path)
        w, h = header.width, header.height
        if header.get_typeof("orientation") and header.get("orientation") in (5, 6, 7, 8):
            w, h = h, w
        plan = layout(w, h, r)
        if r.fit == "fill":
            crop = "attention" if r.gravity == "attention" else "centre"
            image = pyvips.Image.thumbnail(path, plan.canvas[0], height=plan.canvas[1],
                                           crop=crop, size="both")
        else:
            image = pyvips.Image.thumbnail(path, plan.scaled[0], height=plan.scaled[1],
                                           size="force")
        image = ops.to_srgb(image)
        if not preset.has_alpha_output:
            image = ops.flatten(image, background)
    image = ops.pad(image, plan.canvas, plan.offset, background)
    return encode(image, preset)[0]


def run_naive(listing: Path, channels: list[str] | None, out: Path, workers: int,
              config_dir: Path | None = None) -> tuple[float, dict]:
    the_plan = api.plan(listing, channels, config_dir)
    sizes: dict[str, tuple[int, int, int]] = {}

    def one_master(mp) -> None:  # noqa: ANN001
        for d in mp.derivatives:
            data = naive_derivative(mp.master.path, the_plan.presets[d.preset])
            target = out / d.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            image = pyvips.Image.new_from_buffer(data, "")
            sizes[d.path] = (image.width, image.height, len(data))

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one_master, the_plan.masters))
    return time.perf_counter() - start, sizes


def run_engine(listing: Path, channels: list[str] | None, out: Path,
               workers: int) -> tuple[float, dict]:
    start = time.perf_counter()
    result = api.render(listing, out, channels=channels, workers=workers)
    wall = time.perf_counter() - start
    if result.failed:
        raise SystemExit(f"engine run failed: {result.failed[0]['error']}")
    return wall, {r["path"]: (r["width"], r["height"], r["bytes"]) for r in result.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masters", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--channel", action="append", dest="channels")
    args = parser.parse_args()

    configure(1)
    listing = build_catalog(WORK / "catalog", args.masters)
    engine_times, naive_times = [], []
    for i in range(args.repeat):
        for name, fn, times in (("engine", run_engine, engine_times),
                                ("naive", run_naive, naive_times)):
            out = WORK / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            wall, sizes = fn(listing, args.channels, out, args.workers)
            times.append(wall)
            if name == "engine":
                engine_sizes = sizes
            else:
                naive_sizes = sizes
            print(f"run {i + 1}: {name:<6} {wall:6.2f} s  ({len(sizes)} derivatives)", flush=True)
    mismatched = [p for p in engine_sizes if engine_sizes[p][:2] != naive_sizes.get(p, (0, 0))[:2]]
    byte_ratio = sum(v[2] for v in engine_sizes.values()) / sum(v[2] for v in naive_sizes.values())
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
                   f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "masters": args.masters,
        "derivatives": len(engine_sizes),
        "workers": args.workers,
        "engine_s": {"median": statistics.median(engine_times), "min": min(engine_times),
                     "max": max(engine_times)},
        "naive_s": {"median": statistics.median(naive_times), "min": min(naive_times),
                    "max": max(naive_times)},
        "speedup": statistics.median(naive_times) / statistics.median(engine_times),
        "size_mismatches": len(mismatched),
        "engine_bytes_over_naive_bytes": round(byte_ratio, 4),
    }
    print(json.dumps(result, indent=2))
    if mismatched:
        raise SystemExit(f"outputs differ in size: {mismatched[:5]}")


if __name__ == "__main__":
    main()
