"""Every comparison in one run, on one machine: fanout against sharp, ImageMagick, naive pyvips
and the ffmpeg command line, on identical outputs.

    python -m benchmarks           # the full set; writes benchmarks/results/RESULTS.md and .png
    python -m benchmarks --quick   # a reduced set (9 minutes on 2 cores); prints one JSON object

Workloads:
  a. sharp's published task: a 2725x2225 JPEG to 720x588 (Lanczos 3), JPEG quality 80, in
     operations per second at each contender's best parallelism (1 or one per core), each
     measurement in a fresh process, and the CPU time an operation costs;
  b. a catalog job: masters (JPEG and PNG, 2.6 to 24 MP, product shots and lifestyle scenes)
     through every built-in channel's image outputs;
  c. a video job: 1080p 30 fps masters through every built-in MP4/WebM video output.
Peers are installed here (npm for sharp, apt for ImageMagick and ffmpeg) or skipped, with the
reason printed. Ratios above 1 mean fanout is faster, except video_vs_ffmpeg_split and the
*_pct figures, where lower is better: overhead_pct (the workers' time outside decode, resize
and encode) is tail_idle_pct (workers with nothing left to start while another finishes: with
a few masters on 2 workers, most of it) plus the rest; busy_overhead_pct is that rest as a
share of the time the workers had work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyvips
from dask.callbacks import Callback

from engine import api
from engine.image.decode import configure
from engine.schedule import cores

from . import bytes as bytes_bench
from . import naive_vs_engine as naive
from . import peers
from . import video_vs_ffmpeg as video
from .chart import bar_chart
from .task_op import TASK_OUT, ops_per_s

RESULTS = Path(__file__).parent / "results"
TASK_SIZE = (2725, 2225)


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": [round(v, 3) for v in values]}


# a. sharp's task -------------------------------------------------------------------------

def task_master() -> Path:
    path = peers.WORK / "task-2725x2225.jpg"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        from engine.demo import _to_image, lifestyle_scene

        _to_image(lifestyle_scene(*TASK_SIZE)).jpegsave(str(path), Q=90)
    return path


# fanout's JPEG encoder settings (encode._jpeg: mozjpeg's trellis quantisation, quant table 3,
# overshoot deringing, optimised Huffman tables; 4:2:0 below Q95) in sharp's jpeg() terms. sharp
# with these makes the engine's bytes (8,400 against 11,277 at sharp's defaults on the task's
# master): the comparison of equal work. Trellis quantisation is most of the difference in
# time: about 20 ms of a 100 ms operation here.
SHARP_AS_FANOUT = {"optimiseCoding": True, "trellisQuantisation": True,
                   "overshootDeringing": True, "quantisationTable": 3, "progressive": False}


def task(count: int, repeat: int, sharp: Path | None, convert: str | None) -> dict:
    """Operations per second, each contender at its best of 1 or one worker per core; every
    round runs each contender once (a machine's drift spreads over all of them). `bytes`: one
    output's size, which says whether two contenders did the same work."""
    master = task_master()
    n = cores()
    made: dict[str, int] = {}

    # each contender's best of 1 or one worker per core: (ops/s, CPU ms an operation) of it;
    # each measurement in a fresh process, fanout's and naive pyvips' as sharp's (task_op.py)
    def python(name: str) -> Callable[[], tuple[float, float]]:
        def best() -> tuple[float, float]:
            runs = [json.loads(subprocess.run(
                [sys.executable, "-m", "benchmarks.task_op", name, str(master), str(count),
                 str(workers)], capture_output=True, text=True, check=True,
                cwd=Path(__file__).parent.parent).stdout.strip().splitlines()[-1])
                for workers in sorted({1, n})]
            made[name] = runs[0]["bytes"]
            return max((r["ops_per_s"], r["cpu_ms_per_op"]) for r in runs)
        return best

    def with_sharp(jpeg: dict | None) -> Callable[[], tuple[float, float]]:
        def best() -> tuple[float, float]:
            spec = {"task": {"master": str(master), "width": TASK_OUT[0], "height": TASK_OUT[1],
                             "quality": 80, **({"jpeg": jpeg} if jpeg else {})}, "count": count}
            with tempfile.TemporaryDirectory() as tmp:
                runs = [peers.run_sharp(sharp, spec, Path(tmp), c) for c in sorted({1, n})]
            made["sharp" if jpeg else "sharp-defaults"] = runs[0]["bytes"]
            return max((r["ops_per_s"], r["cpu_ms_per_op"]) for r in runs)
        return best

    def with_imagemagick() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            def im_op() -> None:
                subprocess.run([convert, str(master), "-filter", "Lanczos", "-resize",
                                f"{TASK_OUT[0]}x{TASK_OUT[1]}!", "-strip", "-quality", "80",
                                f"{tmp}/out.jpg"], check=True, capture_output=True,
                               env=dict(os.environ, MAGICK_THREAD_LIMIT="1"))
            best = max(ops_per_s(im_op, max(4, count // 4), w) for w in sorted({1, n}))
            made["imagemagick"] = Path(f"{tmp}/out.jpg").stat().st_size
        return best

    contenders: dict[str, Callable[[], tuple[float, float]]] = {
        "engine": python("engine"), "naive-pyvips": python("naive-pyvips")}
    if sharp is not None:
        contenders["sharp"] = with_sharp(SHARP_AS_FANOUT)
        contenders["sharp-defaults"] = with_sharp(None)
    if convert is not None:
        contenders["imagemagick"] = with_imagemagick
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(repeat):  # every other round in reverse: a drifting machine evens out
        for name in list(contenders)[:: -1 if round_ % 2 else 1]:
            rate, ms = contenders[name]()
            rates[name].append(rate)
            cpu[name].append(ms)
    # cpu_ms_per_op: the work an operation cost, which a machine's speed from one minute to the
    # next (another tenant, a throttled core) moves far less than operations per second
    return {name: {**summary(r), "bytes": made.get(name), "cpu_ms_per_op": summary(cpu[name])}
            for name, r in rates.items()}


# b. the catalog job ----------------------------------------------------------------------

def catalog(masters: int, repeat: int, sharp: Path | None, convert: str | None) -> dict:
    """The same work for every contender: each distinct image recipe at a fixed quality. The
    peers cannot search a quality, so fanout renders here with every quality = "auto" preset
    at the fixed quality the peers get (its match_quality, or its format's default:
    bytes.fixed_config); what "auto" costs on top is the bytes benchmark's auto_time_ratio."""
    configure(1)
    listing = naive.build_catalog(naive.WORK / f"catalog-{masters}", masters)
    fixed = bytes_bench.fixed_config(peers.WORK / "catalog-fixed-config")
    jobs = peers.image_jobs(listing, fixed)
    n = cores()
    times: dict[str, list[float]] = {"engine": [], "naive-pyvips": []}
    if sharp is not None:
        times["sharp"] = []
    if convert is not None:
        times["imagemagick"] = []
    fairness: dict[str, dict] = {}
    overhead: dict[str, list[float]] = {}
    for i in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            wall, rows, split = engine_run(listing, root / "engine", fixed)
            times["engine"].append(wall)
            for key, value in split.items():
                overhead.setdefault(key, []).append(value)
            times["naive-pyvips"].append(naive.run_naive(listing, None, root / "naive", n,
                                                             fixed)[0])
            if sharp is not None:
                times["sharp"].append(peers.run_sharp(sharp, jobs, root / "sharp", n)["seconds"])
            if convert is not None:
                times["imagemagick"].append(
                    peers.run_imagemagick(convert, jobs, root / "imagemagick", n))
            if i == 0:  # the outputs are the same every run: check them once, untimed
                fairness = fairness_check(listing, jobs, root, rows, sharp, convert, fixed)
    derivatives = sum(len(j["outputs"]) for j in jobs)
    return {"masters": masters, "distinct_recipes": derivatives,
            "derivatives": len(rows), "seconds": {k: summary(v) for k, v in times.items()},
            "fairness": fairness, **{key: summary(v) for key, v in overhead.items()}}


def engine_run(listing: Path, out: Path, config_dir: Path) -> tuple[float, list, dict]:
    """fanout's catalog job, one worker per core: (wall seconds, rows, engine_overhead's split
    of the workers' time)."""
    n = cores()
    with Timeline() as timeline:
        start = time.perf_counter()
        result = api.render(listing, out, workers=n, config_dir=config_dir)
        wall = time.perf_counter() - start
    assert not result.failed, result.failed[:1]
    rows = result.rows
    return wall, rows, engine_overhead(rows, wall, n, timeline.spans)


def fairness_check(listing: Path, jobs: list[dict], root: Path, rows: list[dict],
                   sharp: Path | None, convert: str | None, config_dir: Path) -> dict:
    """Every peer output against fanout's: size, format and bytes; where bytes differ by more
    than 15%, SSIM against lossless renditions of the same recipes (made here, untimed, by
    each contender for just those outputs)."""
    n = cores()
    ours = peers.engine_files(jobs, root / "engine", rows)
    references = {"sharp": lambda j, out: peers.run_sharp(sharp, j, out, n),
                  "imagemagick": lambda j, out: peers.run_imagemagick(convert, j, out, n)}
    present = [name for name, what in (("sharp", sharp), ("imagemagick", convert)) if what]
    checked = {name: peers.compare(jobs, ours, root / name) for name in present}
    unsure = set().union(*(u for _, u in checked.values()))
    peers.engine_references(listing, root / "ref-engine", n, unsure, config_dir)
    scores: dict[str, float | None] = {}
    fairness = {}
    for name, (report, names) in checked.items():
        if names:
            references[name](peers.lossless_jobs(jobs, names), root / f"ref-{name}")
        fairness[name] = peers.ssim_check(report, names, ours, root / name,
                                          (root / "ref-engine", root / f"ref-{name}"), scores)
    return fairness


class Timeline(Callback):
    """When each master's task started and ended, and on which worker (dask's local scheduler
    calls these in the client process; api.render runs its masters there)."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[object, list] = {}

    def _pretask(self, key, dsk, state) -> None:  # noqa: ANN001 (dask's signature)
        self.spans[key] = [time.perf_counter(), None, None]

    def _posttask(self, key, result, dsk, state, worker_id) -> None:  # noqa: ANN001
        self.spans[key][1:] = [time.perf_counter(), worker_id]


def engine_overhead(rows: list[dict], wall: float, workers: int,
                    spans: dict[object, list]) -> dict[str, float]:
    """Where the workers' time went, in % of wall x workers:

    - overhead_pct: everything outside decode, resize and encode calls (the rows' decode_ms
      and render_ms): 100 - busy;
    - tail_idle_pct: workers idle because nothing was left to start while another still
      worked (from each worker's last task end to the last one's end);
    - busy_overhead_pct: the overhead of the time workers had work, tail excluded:
      planning, scheduling, writing files and the manifest, Python around the pixels.
    """
    total = wall * workers
    busy = peers.busy_seconds(rows)
    ends: dict[object, float] = {}
    for _, end, worker in spans.values():
        if end is not None:
            ends[worker] = max(ends.get(worker, 0.0), end)
    last = max(ends.values(), default=0.0)
    first = min((s for s, _, _ in spans.values()), default=last)
    tail = sum(last - end for end in ends.values()) + (workers - len(ends)) * (last - first)
    return {"overhead_pct": round(100 * max(0.0, 1 - busy / total), 2),
            "tail_idle_pct": round(100 * tail / total, 2),
            "busy_overhead_pct": round(100 * max(0.0, 1 - busy / (total - tail)), 2)}


# c. video ------------------------------------------------------------------------------------

def video_job(masters: int, seconds: float, repeat: int) -> dict | str:
    ffmpeg = video.ensure_ffmpeg()
    if ffmpeg is None:
        return "skipped: the ffmpeg command line is not installed and cannot be (not root)"
    return video.measure(video.build_masters(masters, seconds), repeat, ffmpeg)


# report --------------------------------------------------------------------------------------

def ratios(report: dict) -> dict:
    a, b, c = report["task"], report["catalog"]["seconds"], report["video"]
    med = {k: v["median"] for k, v in b.items()}

    def ratio(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else round(x / y, 3)

    def per_round(peer: str) -> float | None:
        """The median of each round's engine / peer: each round's two figures were taken
        minutes apart at most, so the machine's drift between rounds cancels."""
        if peer not in a:
            return None
        rounds = zip(a["engine"]["runs"], a[peer]["runs"], strict=True)
        return round(statistics.median(e / p for e, p in rounds), 3)

    def cpu_per_round(peer: str) -> float | None:
        """The median of each round's peer / engine CPU an operation (above 1: fanout's
        operation costs less)."""
        if peer not in a:
            return None
        rounds = zip(a["engine"]["cpu_ms_per_op"]["runs"], a[peer]["cpu_ms_per_op"]["runs"],
                     strict=True)
        return round(statistics.median(p / e for e, p in rounds), 3)

    return {
        "sharp_task_ratio": per_round("sharp"),
        "sharp_task_cpu_ratio": cpu_per_round("sharp"),
        "catalog_vs_sharp": ratio(med.get("sharp"), med["engine"]),
        "catalog_vs_naive": ratio(med["naive-pyvips"], med["engine"]),
        "catalog_vs_imagemagick": ratio(med.get("imagemagick"), med["engine"]),
        "video_vs_ffmpeg_split": c["engine_vs_split"] if isinstance(c, dict) else None,
        "overhead_pct": report["catalog"]["overhead_pct"]["median"],
        "busy_overhead_pct": report["catalog"]["busy_overhead_pct"]["median"],
        "tail_idle_pct": report["catalog"]["tail_idle_pct"]["median"],
        # sharp's published task as it is (its default JPEG settings: more bytes, less work)
        "sharp_defaults_task_ratio": per_round("sharp-defaults"),
        # d. bytes at equal SSIMULACRA2 (benchmarks/bytes.py): sharp's total / fanout's, and
        # the catalog job's time with quality = "auto" / at fixed quality
        "bytes_vs_sharp": report["bytes"].get("bytes_vs_sharp"),
        "auto_time_ratio": report["bytes"]["auto_time_ratio"],
    }


def write_results(report: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    r, cat = report["ratios"], report["catalog"]
    lines = [
        "# fanout against its peers, one run on one machine",
        "",
        f"Machine: {report['machine']}. Command: `python -m benchmarks`. Date: {report['date']}.",
        f"Peers: {', '.join(report['peers'])}.",
        "",
        "## a. sharp's task (2725x2225 JPEG to 720x588, Lanczos 3, JPEG q80), operations/s",
        "",
        ("`sharp` encodes with fanout's JPEG settings (mozjpeg trellis quantisation, quant table "
         "3, overshoot deringing, optimised tables): the same bytes, equal work. "
         "`sharp-defaults` is sharp's published task as it is (its default encoder: bigger "
         "files, less work)."),
        "",
        "| contender | median | min-max | bytes | fanout / contender | CPU ms an operation |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in report["task"].items():
        rel = report["task"]["engine"]["median"] / s["median"]
        lines.append(f"| {name} | {s['median']:.1f} | {s['min']:.1f}-{s['max']:.1f} | "
                     f"{s['bytes']} | {rel:.2f}x | {s['cpu_ms_per_op']['median']:.1f} |")
    lines += [
        "",
        (f"## b. catalog job: {cat['masters']} masters, {cat['derivatives']} derivatives "
         f"({cat['distinct_recipes']} distinct recipes), every built-in channel's image outputs"),
        "",
        "| contender | median s | min-max s | contender / fanout |",
        "|---|---|---|---|",
    ]
    engine_s = cat["seconds"]["engine"]["median"]
    for name, s in cat["seconds"].items():
        lines.append(f"| {name} | {s['median']:.2f} | {s['min']:.2f}-{s['max']:.2f} | "
                     f"{s['median'] / engine_s:.2f}x |")
    lines += ["", ("Fairness, output by output against fanout's: same dimensions and format, and "
                   "similar quality = bytes within 15%, or else SSIM (luma, Gaussian sigma 1.5) "
                   "within 0.01 of fanout's, each scored against the contender's own lossless "
                   "rendition of the recipe:"), ""]
    for name, f in cat["fairness"].items():
        lines.append(
            f"- {name}: {f['same_size_and_format']}/{f['outputs']} same size and format; "
            f"similar quality {f['similar_quality']} (bytes median ratio "
            f"{f['bytes_ratio_median']}, within 15%: {f['bytes_within_15pct']}; of the other "
            f"{f['ssim_checked']}, SSIM within 0.01: {f['ssim_within_001']}, SSIM difference "
            f"median {f['ssim_delta_median']}, range {f['ssim_delta_range']}); size/format "
            f"differences: {f['differ'] or 'none'}; not similar: {f['not_similar'] or 'none'}")
    lines.append(f"- engine overhead (wall time of the workers outside decode/resize/encode): "
                 f"{cat['overhead_pct']['median']}%, of which tail idle (nothing left to start "
                 f"while another worker finished) {cat['tail_idle_pct']['median']}%; overhead "
                 f"of the time workers had work: {cat['busy_overhead_pct']['median']}%")
    v = report["video"]
    lines += ["", "## c. video job: 1080p 30 fps masters, every built-in MP4/WebM output", ""]
    if isinstance(v, dict):
        lines += ["| contender | median s | runs |", "|---|---|---|"]
        for name, med in v["median_s"].items():
            lines.append(f"| {name} | {med:.2f} | {v['seconds'][name]} |")
        lines += ["", (f"{v['masters']} master(s) x {v['outputs_per_master']} outputs; "
                       f"bytes: {v['bytes']}; {v['ffmpeg']}.")]
    else:
        lines.append(v)
    lines += ["", "## Ratios", "", "```json", json.dumps(r, indent=2), "```", "",
              "![chart](chart.png)", ""]
    write_section("\n".join(lines))
    chart(report)


# RESULTS.md is the one results page: this run's section between these markers is rewritten by
# each full run; what follows (the single-purpose benchmarks' notes) is kept.
RUN_START = "<!-- python -m benchmarks: start -->"
RUN_END = "<!-- python -m benchmarks: end -->"


def write_section(section: str) -> None:
    target = RESULTS / "RESULTS.md"
    rest = ""
    if target.exists() and RUN_END in (text := target.read_text()):
        rest = text.split(RUN_END, 1)[1]
    target.write_text(f"{RUN_START}\n{section}\n{RUN_END}{rest}")


def chart(report: dict) -> None:
    """Bars of every contender's cost relative to fanout's (1.0 = fanout), drawn with libvips."""
    groups = [("catalog s", {k: v["median"] for k, v in report["catalog"]["seconds"].items()})]
    if isinstance(report["video"], dict):
        groups.append(("video s", report["video"]["median_s"]))
    groups.append(("task s/op", {k: 1 / v["median"] for k, v in report["task"].items()}))
    bars = [(f"{g}: {name}", t / times["engine"]) for g, times in groups
            for name, t in times.items()]
    bar_chart(bars, "cost relative to fanout (fanout = 1.00; longer bars are slower)",
              RESULTS / "chart.png", lambda name: name.endswith("engine"),
              lambda value: f"{value:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a reduced set (9 minutes on 2 cores)")
    parser.add_argument("--masters", type=int, default=40, help="catalog job size (full run)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (full run)")
    parser.add_argument("--video-seconds", type=float, default=4.0, help="video master length")
    args = parser.parse_args()
    quick = args.quick
    sharp, sharp_why = peers.setup_sharp()
    convert, im_why = peers.setup_imagemagick()
    for what, why in ((sharp, sharp_why), (convert, im_why)):
        if what is None:
            print(f"skipped: {why}", flush=True)
    report: dict = {
        "machine": f"{platform.machine()}, {cores()} cores, Python {platform.python_version()}, "
                   f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "date": time.strftime("%Y-%m-%d"),
        "peers": [why for what, why in ((sharp, sharp_why), (convert, im_why)) if what],
    }
    repeat = 1 if quick else args.repeat
    # the task is cheap and its figure the noisiest: five rounds even when quick, of 150
    # operations each (60 x 3 rounds: two quick runs' ratios 1.035 and 0.981, a round's ratio
    # 0.95-1.08 around parity)
    report["task"] = task(150 if quick else 200, 5 if quick else max(5, repeat), sharp,
                          convert)
    # 6 masters when quick: with 3 on 2 workers the last master's tail was half the figure's
    # noise (two runs' catalog ratios 12-14% apart)
    report["catalog"] = catalog(6 if quick else args.masters, repeat, sharp, convert)
    report["video"] = video_job(1, 1.0 if quick else args.video_seconds, repeat)
    bytes_report = bytes_bench.measure(1 if quick else 3, oracle=0 if quick else 6,
                                       repeat=1 if quick else 2)
    report["bytes"] = {k: v for k, v in bytes_report.items() if k != "per_output"}
    report["ratios"] = ratios(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "last-run.json").write_text(json.dumps(report, indent=2) + "\n")
    if quick:
        print(json.dumps(report["ratios"]))
        return
    write_results(report)
    bytes_bench.write_results(bytes_report)
    print(json.dumps(report["ratios"], indent=2))
    print(f"results: {RESULTS / 'RESULTS.md'}")
    shutil.rmtree(peers.WORK / "tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
