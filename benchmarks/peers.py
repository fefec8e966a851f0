"""The image peers, set up and driven: sharp (Node) and ImageMagick, on the engine's recipes.

Each contender gets the same work: for every master, every distinct image recipe of every
built-in channel (the engine renders a recipe shared by two channels once, and so do they),
with the same sizes, fits, formats and quality settings. The peers are handed the recipes, not
the engine's decisions: sharp trims, smart-crops (its `attention` strategy) and searches byte
budgets itself; ImageMagick trims and uses its own `jpeg:extent` budget, and crops by gravity
(it has no attention crop, so it does less work there).

Fairness (`compare`, `ssim_check`): every peer output must have fanout's dimensions and format,
and similar quality: bytes within 15% of fanout's file, or else an SSIM within 0.01 of fanout's,
where each contender's file is scored against that contender's own lossless (PNG) rendition of
the same recipe, so a different crop, resampler or trim box is not mistaken for a quality loss.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyvips

from engine import api
from engine.image.render import render_all
from engine.spec.models import ImagePreset

WORK = Path(__file__).parent / "work"
# sharp's current release (2026-09-27), on libvips 8.18.7 as pyvips-binary is: the same libvips
# underneath both. It needs Node.js 20.9 or later; an older node gets the last release that ran
# there (0.34.5, libvips 8.17.3), and the report names the version it measured.
SHARP_VERSION = "0.35.5"
SHARP_FOR_OLD_NODE = ("0.34.5", (20, 9))
GRAVITY_IM = {"centre": "center", "north": "north", "south": "south", "east": "east",
              "west": "west", "north-east": "northeast", "north-west": "northwest",
              "south-east": "southeast", "south-west": "southwest", "attention": "center"}


def apt_install(package: str) -> bool:
    """Install a Debian package when this process may (root, apt-get present); False if not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    done = subprocess.run(["apt-get", "install", "-y", "-q", package], check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return done.returncode == 0


def setup_sharp() -> tuple[Path | None, str]:
    """sharp installed with npm under benchmarks/work/node; (module path, or None and why)."""
    module = WORK / "node" / "node_modules" / "sharp"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None, "Node.js and npm are not installed (sharp needs them)"
    version = _sharp_version_for(_node_version())
    if _installed_version(module) != version:
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix",
                               str(WORK / "node"), f"sharp@{version}"], capture_output=True,
                              text=True, check=False)
        if done.returncode != 0 or _installed_version(module) != version:
            return None, f"npm install sharp@{version} failed: {done.stderr.strip()[-300:]}"
    return module, f"sharp {version}"


def _node_version() -> tuple[int, ...]:
    done = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return tuple(int(part) for part in re.findall(r"\d+", done.stdout)[:3]) or (0,)


def _sharp_version_for(node: tuple[int, ...]) -> str:
    old, needs = SHARP_FOR_OLD_NODE
    return SHARP_VERSION if node >= needs else old


def _installed_version(module: Path) -> str | None:
    try:
        return json.loads((module / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def setup_imagemagick() -> tuple[str | None, str]:
    """ImageMagick's `convert` (installed with apt when root); (path, or None and why)."""
    def real() -> str | None:
        found = shutil.which("convert")
        if found is None:
            return None
        out = subprocess.run([found, "-version"], capture_output=True, text=True, check=False)
        return found if "ImageMagick" in out.stdout.split("\n")[0] else None

    found = real()
    if found is None and apt_install("imagemagick"):
        found = real()
    if found is None:
        return None, "ImageMagick is not installed and cannot be (not root, or no apt-get)"
    version = subprocess.run([found, "-version"], capture_output=True, text=True, check=False)
    return found, version.stdout.split("\n")[0].removeprefix("Version: ")


def recipe_spec(name: str, preset: ImagePreset) -> dict:
    r = preset.resize
    return {
        "name": name, "trim": preset.trim.threshold if preset.trim else None, "fit": r.fit,
        "width": r.width, "height": r.height, "gravity": r.gravity, "fill_ratio": r.fill_ratio,
        "background": preset.background, "format": preset.format,
        "quality": preset.effective_quality, "auto": preset.auto,
        "match_quality": preset.match_quality,
        "effort": preset.effective_effort,
        "progressive": preset.progressive, "max_bytes": preset.max_bytes,
        "min_quality": preset.min_quality, "keep_alpha": preset.keep_alpha,
    }


def _image_recipes(listing: Path, config_dir: Path | None = None,
                   ) -> list[tuple[str, str, list[tuple[str, ImagePreset]]]]:
    """Per master (path, id): its distinct image recipes, named `<master>--<recipe>.<ext>`
    (under `config_dir`'s presets, or the built-in ones)."""
    the_plan = api.plan(listing, config_dir=config_dir)
    masters = []
    for mp in the_plan.masters:
        recipes = []
        for recipe, preset_name in mp.recipes().items():
            preset = the_plan.presets[preset_name]
            if isinstance(preset, ImagePreset) and preset.frame is None:
                recipes.append((f"{mp.master.id.replace('/', '_')}--{recipe}.{preset.extension}",
                                preset))
        if recipes:
            masters.append((mp.master.path, mp.master.id, recipes))
    return masters


def image_jobs(listing: Path, config_dir: Path | None = None) -> list[dict]:
    """The peers' work list: per master, every distinct image recipe as plain settings."""
    return [{"master": path, "id": mid, "outputs": [recipe_spec(n, p) for n, p in recipes]}
            for path, mid, recipes in _image_recipes(listing, config_dir)]


def run_sharp(module: Path, jobs: list[dict] | dict, out: Path, concurrency: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "jobs.json"
    spec.write_text(json.dumps(jobs))
    done = subprocess.run(
        ["node", str(Path(__file__).parent / "peers" / "sharp_fanout.cjs"), str(spec), str(out),
         str(concurrency)], capture_output=True, text=True, check=True,
        env=dict(os.environ, SHARP_MODULE=str(module)))
    spec.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def imagemagick_args(job: dict, out: Path) -> list[str]:
    """One `convert` per master: decode once into mpr:, then one branch per output."""
    args = [job["master"], "-auto-orient", "-colorspace", "sRGB", "-write", "mpr:base"]
    for o in job["outputs"]:
        branch = ["(", "mpr:base"]
        if o["format"] == "jpeg" or not o["keep_alpha"]:
            branch += ["-background", o["background"], "-alpha", "remove", "-alpha", "off"]
        if o["trim"] is not None:
            branch += ["-fuzz", f"{o['trim'] / 255 * 100:.1f}%", "-trim", "+repage"]
        w, h = o["width"], o["height"]
        branch += ["-filter", "Lanczos"]
        if o["fit"] == "fill":
            branch += ["-resize", f"{w}x{h}^", "-gravity", GRAVITY_IM[o["gravity"]],
                       "-extent", f"{w}x{h}"]
        elif o["fit"] == "pad":
            r = o["fill_ratio"] or 1.0
            branch += ["-resize", f"{round(w * r)}x{round(h * r)}", "-background", o["background"],
                       "-gravity", "center", "-extent", f"{w}x{h}"]
        else:
            box = f"{w or ''}x{h or ''}" + (">" if o["fit"] == "limit" else "")
            branch += ["-resize", box]
        branch += ["-strip", "-quality", str(o["quality"])]
        if o["format"] == "jpeg":
            branch += ["-interlace", "Plane" if o["progressive"] else "None"]
            if o["max_bytes"]:
                branch += ["-define", f"jpeg:extent={o['max_bytes']}"]
        elif o["format"] == "webp":
            branch += ["-define", f"webp:method={o['effort']}"]
        elif o["format"] == "avif":
            branch += ["-define", f"heic:speed={max(0, 9 - o['effort'])}"]
        branch += ["-write", f"{o['format']}:{out / o['name']}", "+delete", ")"]
        args += branch
    return [*args, "null:"]


def run_imagemagick(convert: str, jobs: list[dict], out: Path, workers: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MAGICK_THREAD_LIMIT=str(max(1, (os.cpu_count() or 1) // workers)))

    def one(job: dict) -> None:
        subprocess.run([convert, *imagemagick_args(job, out)], check=True, env=env,
                       capture_output=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, jobs))
    return time.perf_counter() - start


def busy_seconds(rows: list[dict]) -> float:
    """The workers' busy time in a run's rows: each master's decode and each distinct
    derivative's render (decode_ms and render_ms; a recipe two outputs share counts once)."""
    decode = {r["master_id"]: r["decode_ms"] or 0.0 for r in rows if r["status"] == "ok"}
    render = {(r["master_id"], r["recipe_hash"]): r["render_ms"] or 0.0
              for r in rows if r["status"] == "ok"}
    return (sum(decode.values()) + sum(render.values())) / 1000


def engine_files(jobs: list[dict], out: Path, rows: list[dict]) -> dict[str, Path]:
    """Output name (as the peers name it) -> the engine's file for that master and recipe."""
    by_recipe = {(r["master_id"], r["recipe_hash"]): out / r["path"] for r in rows if r["path"]}
    return {o["name"]: by_recipe[(job["id"], o["name"].split("--")[1].split(".")[0])]
            for job in jobs for o in job["outputs"]
            if (job["id"], o["name"].split("--")[1].split(".")[0]) in by_recipe}


def lossless(o: dict) -> dict:
    """The same recipe saved as PNG (no lossy step): the reference its encoded output is scored
    against. Alpha is kept exactly where the real output keeps it."""
    return {**o, "name": f"{o['name']}.png", "format": "png", "quality": 10, "effort": 1,
            "max_bytes": None, "keep_alpha": o["keep_alpha"] and o["format"] != "jpeg"}


def lossless_jobs(jobs: list[dict], names: set[str]) -> list[dict]:
    """`jobs` cut down to the outputs in `names`, each saved losslessly."""
    cut = [{**job, "outputs": [lossless(o) for o in job["outputs"] if o["name"] in names]}
           for job in jobs]
    return [job for job in cut if job["outputs"]]


def engine_references(listing: Path, out: Path, workers: int, names: set[str],
                      config_dir: Path | None = None) -> None:
    """The engine's renditions of the recipes in `names` before its lossy encoder, as PNG."""
    out.mkdir(parents=True, exist_ok=True)

    def one(master: tuple[str, str, list[tuple[str, ImagePreset]]]) -> None:
        path, _, recipes = master
        presets = {f"{name}.png": preset.model_copy(update={
            "format": "png", "effort": 1, "max_bytes": None,
            "keep_alpha": preset.has_alpha_output}) for name, preset in recipes if name in names}
        if presets:
            for name, rendered in render_all(Path(path).read_bytes(), presets)[0].items():
                if not isinstance(rendered, Exception):
                    (out / name).write_bytes(rendered.data)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, _image_recipes(listing, config_dir)))


def _grey(path: Path) -> pyvips.Image:
    image = pyvips.Image.new_from_file(str(path))
    if image.hasalpha():
        image = image.flatten(background=[255] * (image.bands - 1))
    return image.colourspace("b-w")[0].cast("float")


def ssim(a: Path, b: Path) -> float | None:
    """Mean SSIM of two images' luma (Gaussian window, sigma 1.5, as Wang et al. 2004);
    None when their sizes differ."""
    x, y = _grey(a), _grey(b)
    if (x.width, x.height) != (y.width, y.height):
        return None
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    # The five local statistics in one blur pass, kept in memory: each is read several times.
    mx, my, xx, yy, xy = x.bandjoin([y, x * x, y * y, x * y]).gaussblur(1.5).copy_memory()
    mxy, m2 = mx * my, mx * mx + my * my
    return (((mxy * 2 + c1) * ((xy - mxy) * 2 + c2)) / ((m2 + c1) * (xx + yy - m2 + c2))).avg()


def compare(jobs: list[dict], ours: dict[str, Path], theirs: Path) -> tuple[dict, set[str]]:
    """Fairness, output by output: same dimensions and format, and file size against fanout's.

    Returns the report and the outputs whose bytes differ by more than 15% (their quality is
    then compared by SSIM, see `ssim_check`).
    """
    same, differ, ratios, unsure = 0, [], [], set()
    for job in jobs:
        for o in job["outputs"]:
            a, b = ours[o["name"]], theirs / o["name"]
            if not b.exists():
                differ.append(f"{o['name']}: missing")
                continue
            ia, ib = pyvips.Image.new_from_file(str(a)), pyvips.Image.new_from_file(str(b))
            if (ia.width, ia.height) == (ib.width, ib.height) and (
                ia.get("vips-loader") == ib.get("vips-loader")
            ):
                same += 1
            else:
                differ.append(f"{o['name']}: {ia.width}x{ia.height} vs {ib.width}x{ib.height}")
            ratio = b.stat().st_size / a.stat().st_size
            ratios.append(ratio)
            if abs(ratio - 1) > 0.15:
                unsure.add(o["name"])
    ratios.sort()
    return {
        "outputs": same + len(differ), "same_size_and_format": same, "differ": differ[:5],
        "compared": len(ratios),
        "bytes_ratio_median": round(ratios[len(ratios) // 2], 3) if ratios else None,
        "bytes_within_15pct": f"{len(ratios) - len(unsure)}/{len(ratios)}",
        "similar_quality": f"{len(ratios) - len(unsure)}/{len(ratios)}",
    }, unsure


def ssim_check(report: dict, unsure: set[str], ours: dict[str, Path], theirs: Path,
               references: tuple[Path, Path], scores: dict[str, float | None]) -> dict:
    """Quality of the outputs whose bytes differ by more than 15%: each file's SSIM against its
    own contender's lossless rendition of the recipe (so a different crop or resampler is not
    counted as a quality loss), compared with fanout's SSIM for the same recipe; within 0.01
    counts as similar. `scores` caches fanout's SSIM between contenders."""
    deltas, unlike = [], []
    for name in sorted(unsure):
        if name not in scores:
            scores[name] = ssim(ours[name], references[0] / f"{name}.png")
        mine, theirs_q = scores[name], ssim(theirs / name, references[1] / f"{name}.png")
        if mine is None or theirs_q is None:
            unlike.append(f"{name}: no reference")
            continue
        deltas.append(theirs_q - mine)
        if abs(theirs_q - mine) > 0.01:
            unlike.append(f"{name}: SSIM {theirs_q:.4f} vs fanout {mine:.4f}")
    within = sum(abs(d) <= 0.01 for d in deltas)
    total = report["compared"]
    by_bytes = total - len(unsure)
    deltas.sort()
    return {**report,
            "ssim_checked": len(unsure), "ssim_within_001": within,
            "ssim_delta_median": round(deltas[len(deltas) // 2], 4) if deltas else None,
            "ssim_delta_range": [round(deltas[0], 4), round(deltas[-1], 4)] if deltas else None,
            "similar_quality": f"{by_bytes + within}/{total}", "not_similar": unlike[:5]}
