"""Bytes at equal perceived quality: fanout's image outputs against sharp's defaults.

    python -m benchmarks.bytes [--masters 3] [--oracle 6]

On the catalog job (benchmarks/naive_vs_engine.build_catalog), every distinct image recipe of
every built-in channel is rendered by fanout as configured (mozjpeg JPEG, quality = "auto"
where the presets say so). Each output's reference is fanout's own lossless rendering of that
recipe (the pixels right before the lossy encoder, saved as PNG); sharp encodes that same PNG
with its defaults (JPEG quality 80 with mozjpeg off, WebP 80, AVIF 50; a recipe's fixed
quality or match_quality where it names another; the recipe's progressive flag and byte
budget), so both encoders start from identical pixels and every file is scored against the
same reference with SSIMULACRA2 (engine/image/ssimulacra2.py).
`--oracle N` also scores N of fanout's outputs with the reference implementation (the
`ssimulacra2` package, when installed) against the manifest's score.

Figures: `bytes_vs_sharp` = sharp's total bytes / fanout's (target >= 1.25, i.e. 20% fewer),
the worst per-output score deficit against sharp (target: none more than 2 points below), and
`auto_time_ratio` = the catalog job's render time as configured / with every "auto" preset at
the fixed quality it stands in for (its match_quality, or its format's default), same workers,
least of `--repeat` runs (target <= 2).
Render time is the workers' busy time: each master's decode and each distinct derivative's
render (the manifest's decode_ms and render_ms), which a 2-worker job's wall time blurs with
cluster start, bookkeeping and the wait on its last master (the wall-time ratio is reported
beside it, `auto_wall_ratio`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyvips

from engine import api
from engine.image.decode import configure
from engine.image.render import render_all
from engine.image.ssimulacra2 import Reference
from engine.spec.loader import builtin_dir

from . import naive_vs_engine as naive
from . import peers
from .chart import bar_chart

RESULTS = Path(__file__).parent / "results"
SHARP_ENCODE = Path(__file__).parent / "peers" / "sharp_encode.cjs"


def cores() -> int:
    return os.cpu_count() or 1


def fixed_config(root: Path) -> Path:
    """A config dir whose presets are the built-in ones with quality = "auto" (and its target)
    taken out: each such preset at the fixed quality it stands in for, its match_quality (the
    conventional quality it looks as good as), or else its format's default."""
    presets = root / "presets"
    presets.mkdir(parents=True, exist_ok=True)
    for path in sorted((builtin_dir() / "presets").glob("*.toml")):
        tables = re.split(r"(?m)^(?=\[)", path.read_text())
        for i, table in enumerate(tables):
            match = re.search(r"(?m)^match_quality = (\d+)\n", table)
            if match:
                table = table.replace('quality = "auto"\n', f"quality = {match[1]}\n")
            tables[i] = re.sub(r'(?m)^(quality = "auto"|target = .*|match_quality = .*)\n', "",
                               table)
        (presets / path.name).write_text("".join(tables))
    return root


def timed_render(listing: Path, out: Path, config_dir: Path | None) -> tuple[float, float, list]:
    """Render the catalog job; (wall seconds, busy seconds, rows). Busy: every master's
    decode and every distinct derivative's render, summed over the workers."""
    configure(1)
    start = time.perf_counter()
    result = api.render(listing, out, workers=cores(), config_dir=config_dir)
    wall = time.perf_counter() - start
    assert not result.failed, result.failed[:1]
    return wall, peers.busy_seconds(result.rows), result.rows


def references(listing: Path, out: Path, names: set[str]) -> None:
    """fanout's lossless rendering (PNG) of each recipe in `names`: the pixels its encoder
    was handed, alpha kept where the real output keeps it."""
    out.mkdir(parents=True, exist_ok=True)

    def one(master: tuple[str, str, list]) -> None:
        path, _, recipes = master
        presets = {f"{name}.png": preset.model_copy(update={
            "format": "png", "effort": 1, "max_bytes": None, "quality": None, "target": None,
            "keep_alpha": preset.has_alpha_output}) for name, preset in recipes if name in names}
        if presets:
            for name, rendered in render_all(Path(path).read_bytes(), presets)[0].items():
                if not isinstance(rendered, Exception):
                    (out / name).write_bytes(rendered.data)

    with ThreadPoolExecutor(cores()) as pool:
        list(pool.map(one, peers._image_recipes(listing)))


def sharp_encode(module: Path, jobs: list[dict], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "jobs.json"
    spec.write_text(json.dumps(jobs))
    done = subprocess.run(["node", str(SHARP_ENCODE), str(spec), str(out)], capture_output=True,
                          text=True, check=True, env=dict(os.environ, SHARP_MODULE=str(module)))
    spec.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


# sharp's own default quality per format (its jpeg(), webp() and avif() docs); every job hands
# sharp_encode.cjs its quality, so this is the one copy
SHARP_DEFAULT = {"jpeg": 80, "webp": 80, "avif": 50}


def sharp_quality(spec: dict) -> int:
    """The quality sharp encodes a recipe at: its fixed quality, or the conventional quality a
    matched "auto" recipe stands in for, or else (a plain "auto" target) sharp's default."""
    quality = spec["match_quality"] if spec["auto"] else spec["quality"]
    return SHARP_DEFAULT[spec["format"]] if quality is None else quality


def _load(path: Path) -> pyvips.Image:
    return pyvips.Image.new_from_file(str(path), access="sequential").copy_memory()


def score_pair(reference: Path, files: list[Path]) -> list[float]:
    ref = Reference(_load(reference))
    return [ref.score(_load(f)) for f in files]


def oracle_check(outputs: list[dict], count: int) -> dict | str:
    """The reference implementation's score of `count` fanout files (spread over the sizes)
    against the manifest's score."""
    try:
        from ssimulacra2 import compute_ssimulacra2
    except ImportError:
        return "skipped: the ssimulacra2 package (the reference implementation) is not installed"
    scored = sorted((o for o in outputs if o["manifest_score"] is not None),
                    key=lambda o: o["pixels"])
    if not scored or count <= 0:
        return "skipped: no scored outputs"
    step = max(1, len(scored) // count)
    sample = scored[::step][:count]
    rows = []
    for o in sample:
        ours = Path(o["ours_path"])
        if o["format"] == "avif":  # the reference package reads images with Pillow: as PNG
            png = ours.with_suffix(".oracle.png")
            _load(ours).pngsave(str(png))
            ours = png
        value = float(compute_ssimulacra2(o["reference"], str(ours)))
        rows.append({"name": o["name"], "manifest": round(o["manifest_score"], 2),
                     "reference_impl": round(value, 2),
                     "diff": round(abs(value - o["manifest_score"]), 2)})
    return {"checked": len(rows), "max_diff": max(r["diff"] for r in rows), "rows": rows}


def measure(masters: int, oracle: int = 0, keep: Path | None = None, repeat: int = 2) -> dict:
    """The whole comparison on a catalog of `masters`; returns the report (see the module doc).
    The two renders are timed `repeat` times, alternating, and the fastest of each is kept
    (on a shared machine the noise only ever adds time)."""
    listing = naive.build_catalog(naive.WORK / f"catalog-{masters}", masters)
    sharp, sharp_why = peers.setup_sharp()
    jobs = peers.image_jobs(listing)
    with tempfile.TemporaryDirectory() as tmp:
        root = keep or Path(tmp)
        autos, fixeds = [], []  # (wall, busy) per run
        for _ in range(max(1, repeat)):
            shutil.rmtree(root / "engine", ignore_errors=True)
            shutil.rmtree(root / "fixed", ignore_errors=True)
            *seconds, rows = timed_render(listing, root / "engine", None)
            autos.append(seconds)
            fixeds.append(timed_render(listing, root / "fixed",
                                       fixed_config(root / "fixed-config"))[:2])
        times = {"auto_wall_s": min(a[0] for a in autos), "fixed_wall_s": min(f[0] for f in fixeds),
                 "auto_s": min(a[1] for a in autos), "fixed_s": min(f[1] for f in fixeds)}
        ours = peers.engine_files(jobs, root / "engine", rows)
        by_file = {root / "engine" / r["path"]: r for r in rows if r["path"]}
        specs = {o["name"]: o for job in jobs for o in job["outputs"] if o["name"] in ours}
        references(listing, root / "ref", set(specs))
        names = sorted(n for n in specs if (root / "ref" / f"{n}.png").exists())
        sharp_s = None
        if sharp is not None:
            def job(n: str, quality: int, name: str) -> dict:
                return {"input": str(root / "ref" / f"{n}.png"), "name": name,
                        "format": specs[n]["format"], "quality": quality,
                        "progressive": specs[n]["progressive"],
                        "max_bytes": specs[n]["max_bytes"],
                        "min_quality": specs[n]["min_quality"]}

            # a recipe that fixes its quality (Amazon's q90) is encoded by sharp at that
            # quality, one that matches a conventional quality (Instagram's "as good as q88")
            # at that one; the others at sharp's defaults. Those not at sharp's default also
            # at it (`.default`): the secondary figure.
            default = {n: SHARP_DEFAULT[specs[n]["format"]] for n in names}
            fixed = [n for n in names if sharp_quality(specs[n]) != default[n]]
            sharp_s = sharp_encode(sharp, [job(n, sharp_quality(specs[n]), n) for n in names]
                                   + [job(n, default[n], f"{n}.default") for n in fixed],
                                   root / "sharp")
        outputs = []

        def one(name: str) -> dict:
            files = [ours[name]] + ([root / "sharp" / name] if sharp is not None else [])
            scores = score_pair(root / "ref" / f"{name}.png", files)
            row = by_file[ours[name]]
            default = root / "sharp" / f"{name}.default"
            return {"name": name, "format": specs[name]["format"],
                    "auto": specs[name]["auto"],
                    "pixels": row["width"] * row["height"],
                    "size": f"{row['width']}x{row['height']}",
                    "quality": row["quality"], "manifest_score": row["score"],
                    "ours_bytes": files[0].stat().st_size,
                    "ours_score": round(scores[0], 2),
                    "sharp_bytes": files[1].stat().st_size if sharp is not None else None,
                    "sharp_score": round(scores[1], 2) if sharp is not None else None,
                    "sharp_default_bytes": (default.stat().st_size if default.exists()
                                            else files[1].stat().st_size
                                            if sharp is not None else None),
                    "ours_path": str(files[0]), "reference": str(root / "ref" / f"{name}.png")}

        configure(1)
        with ThreadPoolExecutor(cores()) as pool:
            outputs = list(pool.map(one, names))
        check = oracle_check(outputs, oracle)
    for o in outputs:
        del o["ours_path"], o["reference"]
    return summarise(outputs, masters, times, sharp_s, sharp_why, check)


def summarise(outputs: list[dict], masters: int, times: dict[str, float],
              sharp_s: float | None, sharp_why: str, check: dict | str) -> dict:
    ours_total = sum(o["ours_bytes"] for o in outputs)
    report: dict = {
        "machine": f"{platform.machine()}, {cores()} cores, Python {platform.python_version()}, "
                   f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "date": time.strftime("%Y-%m-%d"), "masters": masters, "outputs": len(outputs),
        "sharp": sharp_why, "fanout_bytes": ours_total,
        **{k: round(v, 2) for k, v in times.items()},
        "auto_time_ratio": round(times["auto_s"] / times["fixed_s"], 3),
        "auto_wall_ratio": round(times["auto_wall_s"] / times["fixed_wall_s"], 3),
        "oracle": check,
    }
    if sharp_s is not None:
        sharp_total = sum(o["sharp_bytes"] for o in outputs)
        deficits = [o["sharp_score"] - o["ours_score"] for o in outputs]
        per_format = {}
        for fmt in sorted({o["format"] for o in outputs}):
            mine = [o for o in outputs if o["format"] == fmt]
            per_format[fmt] = {
                "outputs": len(mine),
                "fanout_bytes": sum(o["ours_bytes"] for o in mine),
                "sharp_bytes": sum(o["sharp_bytes"] for o in mine),
                "fanout_score_median": round(statistics.median(o["ours_score"] for o in mine), 2),
                "sharp_score_median": round(statistics.median(o["sharp_score"] for o in mine), 2),
            }
        report.update({
            "sharp_bytes": sharp_total, "sharp_encode_s": round(sharp_s, 2),
            "bytes_vs_sharp": round(sharp_total / ours_total, 3),
            # every output at sharp's default quality, Amazon's and Instagram's too (whose
            # fanout files look like q90/q88, scoring well above sharp's q80)
            "bytes_vs_sharp_default_everywhere": round(
                sum(o["sharp_default_bytes"] for o in outputs) / ours_total, 3),
            "worst_score_deficit": round(max(deficits), 2),
            "outputs_over_2_below": sum(d > 2 for d in deficits),
            "per_format": per_format,
        })
    report["per_output"] = outputs
    return report


def write_results(report: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bytes.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Bytes at equal perceived quality: fanout against sharp's defaults",
        "",
        f"Machine: {report['machine']}. Command: `python -m benchmarks.bytes --masters "
        f"{report['masters']}`. Date: {report['date']}. Peer: {report['sharp']}.",
        "",
        f"{report['outputs']} image outputs (every distinct image recipe of every built-in "
        "channel on the catalog job). Each is scored with SSIMULACRA2 against fanout's own "
        "lossless rendering of the recipe; sharp encodes that same rendering with its defaults "
        "(JPEG q80 mozjpeg off, WebP q80, AVIF q50; Amazon's fixed q90 at q90, Instagram's "
        "\"as good as a conventional q88\" (match_quality = 88) at q88), the recipe's "
        "progressive flag and budget.",
        "",
    ]
    if "bytes_vs_sharp" in report:
        lines += [
            "| format | outputs | fanout KB | sharp KB | sharp / fanout | fanout score "
            "(median) | sharp score (median) |",
            "|---|---|---|---|---|---|---|",
        ]
        for fmt, f in report["per_format"].items():
            lines.append(f"| {fmt} | {f['outputs']} | {f['fanout_bytes'] / 1000:.0f} | "
                         f"{f['sharp_bytes'] / 1000:.0f} | "
                         f"{f['sharp_bytes'] / f['fanout_bytes']:.2f} | "
                         f"{f['fanout_score_median']} | {f['sharp_score_median']} |")
        lines += [
            f"| all | {report['outputs']} | {report['fanout_bytes'] / 1000:.0f} | "
            f"{report['sharp_bytes'] / 1000:.0f} | **{report['bytes_vs_sharp']:.2f}** | | |",
            "",
            f"- bytes_vs_sharp (sharp's total / fanout's; target >= 1.25): "
            f"**{report['bytes_vs_sharp']}**",
            (f"- with sharp at its default quality for every output (Amazon's and Instagram's "
             f"files too, where fanout's score well above sharp's): "
             f"{report['bytes_vs_sharp_default_everywhere']}"),
            f"- worst score deficit (sharp's score - fanout's, one output; target <= 2): "
            f"**{report['worst_score_deficit']}**; outputs more than 2 below: "
            f"{report['outputs_over_2_below']}",
        ]
    lines += [
        f"- auto_time_ratio (catalog job render time, the workers' busy time decoding and "
        f"rendering, as configured / every \"auto\" preset at a fixed quality; target <= 2): "
        f"**{report['auto_time_ratio']}** ({report['auto_s']} s / {report['fixed_s']} s); "
        f"wall time {report['auto_wall_ratio']} ({report['auto_wall_s']} s / "
        f"{report['fixed_wall_s']} s, 2 workers: cluster start, bookkeeping and the wait on "
        f"the last master included)",
        f"- reference implementation against the manifest's score: {_oracle_line(report)}",
        "", "![bytes per format](bytes.png)", "",
        "Per output: see bytes.json (`per_output`).", "",
    ]
    (RESULTS / "BYTES.md").write_text("\n".join(lines))
    if "per_format" in report:
        chart(report)


def _oracle_line(report: dict) -> str:
    check = report["oracle"]
    if isinstance(check, str):
        return check
    return f"{check['checked']} outputs, largest difference {check['max_diff']} points"


def chart(report: dict) -> None:
    """Bars of total kilobytes per format, fanout against sharp, drawn with libvips."""
    bars = []
    for fmt, f in report["per_format"].items():
        bars += [(f"{fmt}: fanout", f["fanout_bytes"]), (f"{fmt}: sharp", f["sharp_bytes"])]
    bars += [("all: fanout", report["fanout_bytes"]), ("all: sharp", report["sharp_bytes"])]
    bar_chart(bars, "total kilobytes per format at equal or better SSIMULACRA2 (shorter is "
              "better)", RESULTS / "bytes.png", lambda name: "fanout" in name,
              lambda value: f"{value / 1000:.0f} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masters", type=int, default=3, help="catalog job size")
    parser.add_argument("--oracle", type=int, default=6,
                        help="outputs also scored by the reference implementation")
    parser.add_argument("--keep", type=Path, help="keep the files under this folder")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each render")
    args = parser.parse_args()
    report = measure(args.masters, args.oracle, args.keep, args.repeat)
    write_results(report)
    shown = {k: v for k, v in report.items() if k not in ("per_output",)}
    print(json.dumps(shown, indent=2))
    print(f"results: {RESULTS / 'BYTES.md'}")


if __name__ == "__main__":
    main()
