"""Derivatives per second at 1, 2, 4, 8, 16 worker processes: fanout next to plain libvips.

fanout: a dask.distributed LocalCluster of N worker processes, one thread and one libvips
thread each (how it scales across processes is how it scales across a cluster's machines).
Plain libvips: the same derivatives written by a minimal pyvips process pool (multiprocessing
Pool of N processes, one libvips thread each), each task one decode-resize-encode of one
recipe of one master (`thumbnail` from the file with shrink-on-load, the same finishing steps
and savers: benchmarks/naive_vs_engine.py), its bytes written to every place that wants them.

Weak scaling: N workers get a catalog of N x --per-worker masters (the first ones of one
catalog, one of each kind and size per 6), so every point does the same work per worker and
takes about as long; derivatives/s is what grows. Ratios: each system's N workers / its own
1 worker, and fanout's scaling / plain libvips' scaling (target: 16 workers at least 12x one,
and within 10% of plain libvips' own scaling).

    python -m benchmarks.scaling [--workers 1 2 4 8 16] [--per-worker 6] [--channel NAME ...]

Time: every built-in channel is about 48 s of work per master on one core (most of it
`mobile`'s small-image quality searches), so the defaults take about 10 minutes a point on
any machine (weak scaling: each point does the same work per worker). The 16-core figure in
benchmarks/results/RESULTS.md used `--channel amazon --channel instagram --channel email`:
11-17 s per system per point, about 3 minutes in all with the catalog. It measures one worker
first, then the largest count, then the ones between, and writes
benchmarks/results/scaling.json after every point (a run stopped part-way keeps what it
measured); it ends with a table and one JSON line. Worker counts above the machine's cores are
skipped (they would measure oversubscription, not scaling).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import time
from pathlib import Path

import pyvips

from engine import api
from engine.demo import _to_image, lifestyle_scene, product_shot

from .naive_vs_engine import COLOURS, SIZES, WORK, naive_derivative

RESULTS = Path(__file__).parent / "results" / "scaling.json"
KINDS = len(SIZES)  # one master of each size and kind per KINDS masters


def _write_master(job: tuple[Path, int]) -> str:
    """Master i of the catalog (the same mix as naive_vs_engine.build_catalog)."""
    folder, i = job
    w, h = SIZES[i % len(SIZES)]
    if i % 6 == 5:
        name = f"scene-{i:03}.jpg"
        if not (folder / name).exists():
            _to_image(lifestyle_scene(w, h)).jpegsave(str(folder / name), Q=90)
        return f"m{i:03},{name},SKU{i // 3:03},{i % 3},editorial"
    shape = "box" if i % 2 else "ellipse"
    name = f"product-{i:03}.png" if i % 4 == 3 else f"product-{i:03}.jpg"
    if not (folder / name).exists():
        image = _to_image(product_shot(w, h, COLOURS[i % len(COLOURS)], shape=shape))
        image.write_to_file(str(folder / name), **({"Q": 92} if name.endswith("jpg") else {}))
    return f"m{i:03},{name},SKU{i // 3:03},{i % 3},product"


def build_catalogs(folder: Path, counts: list[int], processes: int) -> dict[int, Path]:
    """One folder of masters, and a listing of its first `count` masters per count."""
    folder.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        lines = pool.map(_write_master, [(folder, i) for i in range(max(counts))])
    listings = {}
    for count in counts:
        listing = folder / f"catalog-{count}.csv"
        listing.write_text("\n".join(["id,path,product,position,role", *lines[:count]]) + "\n")
        listings[count] = listing
    return listings


def run_fanout(listing: Path, out: Path, workers: int,
               channels: list[str] | None) -> tuple[float, dict[str, tuple]]:
    """Wall time of one render on a fresh LocalCluster of `workers` processes (warmed up:
    the engine imported in every worker before the clock starts)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(_warm_up)
        start = time.perf_counter()
        result = api.render(listing, out, channels=channels,
                            scheduler=cluster.scheduler_address)
        wall = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(f"fanout run failed: {result.failed[0]['error']}")
    return wall, {r["path"]: (r["width"], r["height"], r["format"]) for r in result.rows}


def _warm_up() -> None:
    from engine import job  # noqa: F401 (pyvips, av, the pipeline)
    from engine.image.decode import configure

    configure(1)


def _plain_init() -> None:
    """One libvips thread, no operation cache; and the image brought into memory before it
    is encoded: a quality = "auto" recipe searches the quality on tiles of the image (random
    access), which `thumbnail`'s sequential read from the file cannot serve (fanout's
    pipeline holds its images in memory anyway). Only in this pool's own processes."""
    from engine.image.encode import encode

    from . import naive_vs_engine

    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)
    naive_vs_engine.encode = lambda image, preset: encode(image.copy_memory(), preset)


def _plain_task(job: tuple[str, object, list[str], str]) -> list[tuple[str, tuple]]:
    """One decode-resize-encode; the bytes written to every path that wants this recipe."""
    path, preset, targets, out = job
    data = naive_derivative(path, preset)  # type: ignore[arg-type]
    image = pyvips.Image.new_from_buffer(data, "")
    facts = (image.width, image.height, preset.format)  # type: ignore[attr-defined]
    for target in targets:
        file = Path(out) / target
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
    return [(t, facts) for t in targets]


def run_plain(listing: Path, out: Path, workers: int,
              channels: list[str] | None) -> tuple[float, dict[str, tuple]]:
    """Wall time of plain libvips on a warm process pool of `workers` (plan not timed)."""
    plan = api.plan(listing, channels)
    jobs = []
    for mp in plan.masters:
        recipes: dict[str, list[str]] = {}
        for d in mp.derivatives:
            if d.error is None and d.path is not None:
                recipes.setdefault(d.recipe_hash, []).append(d.path)
        by_hash = {d.recipe_hash: d.preset for d in mp.derivatives}
        jobs += [(mp.master.path, plan.presets[by_hash[h]], paths, str(out))
                 for h, paths in recipes.items()]
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_plain_init) as pool:
        pool.map(_plain_init_noop, range(workers))
        start = time.perf_counter()
        done = pool.imap_unordered(_plain_task, jobs, chunksize=1)
        sizes = {path: facts for batch in done for path, facts in batch}
        wall = time.perf_counter() - start
    return wall, sizes


def _plain_init_noop(_: int) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--per-worker", type=int, default=KINDS,
                        help="masters per worker (default: one of each kind and size)")
    parser.add_argument("--channel", action="append", dest="channels",
                        help="only these channels (repeatable; default: every built-in one)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    # the smallest count first (the base of every ratio), then the largest: a run stopped
    # part-way has the top figure before the ones between
    asked = sorted(set(args.workers))
    counts = [n for n in asked[:1] + asked[:0:-1] if n <= cores]
    skipped = [n for n in asked if n > cores]
    if skipped:
        print(f"skipping {skipped} workers: this machine has {cores} cores", flush=True)
    if not counts:
        raise SystemExit(f"no worker count asked for fits this machine's {cores} cores")
    listings = build_catalogs(WORK / "scaling", [n * args.per_worker for n in counts], cores)
    points: dict[int, dict] = {}
    for n in counts:
        listing = listings[n * args.per_worker]
        runs = {}
        for name, fn in (("fanout", run_fanout), ("libvips", run_plain)):
            out = WORK / f"out-scaling-{name}-{n}"
            shutil.rmtree(out, ignore_errors=True)
            wall, sizes = fn(listing, out, n, args.channels)
            shutil.rmtree(out, ignore_errors=True)
            runs[name] = (wall, sizes)
            print(f"{n:>2} workers  {name:<8} {wall:7.2f} s  {len(sizes) / wall:7.2f} "
                  f"derivatives/s  ({len(sizes)} derivatives)", flush=True)
        (fw, fs), (pw, ps) = runs["fanout"], runs["libvips"]
        differ = sorted(p for p in fs if fs[p] != ps.get(p))
        if differ or len(fs) != len(ps):
            raise SystemExit(f"{n} workers: outputs differ: {differ[:5]} ({len(fs)} vs "
                             f"{len(ps)} files)")
        points[n] = {"masters": n * args.per_worker, "derivatives": len(fs),
                     "fanout_s": round(fw, 2), "fanout_per_s": round(len(fs) / fw, 2),
                     "libvips_s": round(pw, 2), "libvips_per_s": round(len(ps) / pw, 2)}
        # written after every point: a run stopped part-way keeps what it measured
        summary = summarise(points, args, cores, skipped)
        RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n| workers | derivatives | fanout /s | x{counts[0]} | libvips /s | x{counts[0]} "
          "| fanout scaling / libvips scaling |\n|---|---|---|---|---|---|---|")
    for n, p in sorted(points.items()):
        print(f"| {n} | {p['derivatives']} | {p['fanout_per_s']} | {p['fanout_scaling']} | "
              f"{p['libvips_per_s']} | {p['libvips_scaling']} | "
              f"{p['fanout_over_libvips_scaling']} |")
    print(json.dumps(summary))


def summarise(points: dict[int, dict], args: argparse.Namespace, cores: int,
              skipped: list[int]) -> dict:
    """The JSON summary of the points measured so far: each point's scaling against the
    first one measured (the smallest worker count asked for comes first)."""
    first = next(iter(points.values()))
    for p in points.values():
        p["fanout_scaling"] = round(p["fanout_per_s"] / first["fanout_per_s"], 3)
        p["libvips_scaling"] = round(p["libvips_per_s"] / first["libvips_per_s"], 3)
        p["fanout_over_libvips_scaling"] = round(p["fanout_scaling"] / p["libvips_scaling"], 3)
    top = points[max(points)]
    return {
        "machine": f"{platform.machine()}, {cores} cores ({cpu_model()}), Python "
                   f"{platform.python_version()}, libvips {pyvips.version(0)}."
                   f"{pyvips.version(1)}.{pyvips.version(2)}",
        "date": time.strftime("%Y-%m-%d"),
        "per_worker_masters": args.per_worker,
        "channels": args.channels or "all",
        # the points this run has no figure for (asked for and over the cores, not
        # asked for, or not reached): a 16-core figure is only claimed where it was measured
        "not_measured": sorted(set(skipped) | ({1, 2, 4, 8, 16} - set(points))),
        "points": {str(n): p for n, p in sorted(points.items())},
        "top_workers": max(points),
        "top_fanout_scaling": top["fanout_scaling"],
        "top_libvips_scaling": top["libvips_scaling"],
        "top_fanout_over_libvips_scaling": top["fanout_over_libvips_scaling"],
    }


def cpu_model() -> str:
    """The processor's model name as the kernel reports it (or "unknown")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
