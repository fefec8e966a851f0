"""fanout's video fan-out against the ffmpeg command line, side by side in one run.

Contenders, all producing the same files (same sizes, filters, encoders and settings) from the
same 1080p 30 fps masters with sound:
  engine       `fanout render` of a channel holding every built-in MP4/WebM video output
               (one decode per master; the ladder, reels, feed, Amazon and loop outputs)
  ffmpeg-split one ffmpeg command per master: one decode, `split`, the same filter chain per
               output, the same encoder options (what a careful script writer would do)
  ffmpeg-each  one ffmpeg command per output (what most scripts do: decode again each time)

Animated GIF/WebP previews and posters are left out: ffmpeg makes them by other means
(palettegen), so their cost would not compare like for like.

    python -m benchmarks.video_vs_ffmpeg [--masters 2] [--seconds 6] [--repeat 3] [--json]

Needs the ffmpeg command line (`apt-get install ffmpeg`); installed here when root, else skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from engine import api
from engine.demo import product_video
from engine.plan import ladder_names
from engine.spec import load_config
from engine.spec.models import VideoPreset
from engine.video.branch import Branch
from engine.video.encoders import encoder_settings
from engine.video.probe import describe_output

from .peers import apt_install

WORK = Path(__file__).parent / "work" / "video"
AUDIO_OPTIONS = {"aac": ["-c:a", "aac"], "opus": ["-c:a", "libopus"]}


def ensure_ffmpeg() -> str | None:
    """Path of the ffmpeg command, installing it with apt when root; None (and why) if not."""
    found = shutil.which("ffmpeg")
    if found is None and apt_install("ffmpeg"):
        found = shutil.which("ffmpeg")
    return found


def video_outputs() -> dict[str, VideoPreset]:
    """Every built-in MP4/WebM video output (ladders expanded), by concrete preset name."""
    config = load_config()
    wanted: dict[str, VideoPreset] = {}
    for channel in config.channels.values():
        for output in channel.outputs:
            preset = config.presets[output.preset]
            if not isinstance(preset, VideoPreset) or preset.animated:
                continue
            for rung, name in ladder_names(output.preset, preset):
                wanted[name] = dict(preset.rungs())[rung]
    return wanted


def write_config(folder: Path, presets: dict[str, VideoPreset]) -> Path:
    """A channel `bench` with one output per preset (dedupe aside, what the engine renders)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "channels").mkdir(exist_ok=True)
    (folder / "presets").mkdir(exist_ok=True)
    lines, channel = [], ['name = "bench"']
    for i, (name, preset) in enumerate(presets.items()):
        data = preset.model_dump(exclude_none=True, exclude={"description", "ladder"})
        lines.append(f"[bench-{i}]")
        for key, value in data.items():
            lines.append(f"{key} = {_toml(value)}")
        channel += ["[[outputs]]", f'name = "o{i}"', f'preset = "bench-{i}"',
                    f'description = "{name}"']
    (folder / "presets" / "bench.toml").write_text("\n".join(lines) + "\n")
    (folder / "channels" / "bench.toml").write_text("\n".join(channel) + "\n")
    return folder


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()
                                if v is not None) + " }"
    return json.dumps(value)


def ffmpeg_outputs(presets: dict[str, VideoPreset], out: Path, size: tuple[int, int],
                   fps: Fraction) -> list[list[str]]:
    """Per output: the filter chain and the output options the engine uses for it."""
    specs = []
    for i, preset in enumerate(presets.values()):
        branch = Branch(f"o{i}", preset, size, fps, Fraction(1, 15360), out)
        chain = ",".join(f"{n}={a}" if a else n for n, a in branch.filters())
        encoder, opts = encoder_settings(preset, branch.rate)
        args = ["-c:v", encoder, "-pix_fmt", "yuv420p", "-colorspace", "bt709",
                "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
        for key, value in opts.items():
            args += [f"-{key}:v", value]
        if preset.effective_audio != "none":
            args += ["-map", "0:a?", *AUDIO_OPTIONS[preset.effective_audio],
                     "-b:a", f"{preset.audio_bitrate_kbps}k", "-ar", str(preset.audio_sample_rate)]
        if preset.max_duration_s:
            args += ["-t", str(preset.max_duration_s)]
        if preset.format == "mp4":
            args += ["-movflags", "+faststart"]
        specs.append([chain, *args, str(out / f"o{i}.{preset.extension}")])
    return specs


def run_split(ffmpeg: str, master: Path, specs: list[list[str]]) -> None:
    graph = [f"[0:v]split={len(specs)}" + "".join(f"[s{i}]" for i in range(len(specs)))]
    maps: list[str] = []
    for i, (chain, *args) in enumerate(specs):
        graph.append(f"[s{i}]{chain}[o{i}]")
        maps += ["-map", f"[o{i}]", *args]
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(master), "-filter_complex",
                    ";".join(graph), *maps], check=True)


def run_each(ffmpeg: str, master: Path, specs: list[list[str]]) -> None:
    for chain, *args in specs:
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(master), "-filter_complex",
                        f"[0:v]{chain}[o]", "-map", "[o]", *args], check=True)


def build_masters(count: int, seconds: float) -> list[Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    masters = []
    for i in range(count):
        path = WORK / f"master-{i}-{seconds:g}s.mp4"
        if not path.exists():
            product_video(path, 1920, 1080, seconds=seconds, fps=30, noise=3.0 + 2 * i,
                          flashes=(seconds / 2,))
        masters.append(path)
    return masters


def measure(masters: list[Path], repeat: int, ffmpeg: str) -> dict:
    presets = video_outputs()
    config = write_config(WORK / "config", presets)
    catalog = WORK / "catalog"
    shutil.rmtree(catalog, ignore_errors=True)
    catalog.mkdir()
    for m in masters:
        os.symlink(m, catalog / m.name)
    times: dict[str, list[float]] = {"engine": [], "ffmpeg-split": [], "ffmpeg-each": []}
    sizes: dict[str, dict[str, int]] = {}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "engine"
            start = time.perf_counter()
            result = api.render(catalog, out, channels=["bench"], config_dir=config, workers=1)
            times["engine"].append(time.perf_counter() - start)
            assert result.exit_code == 0, [r["error"] for r in result.rows if r["error"]]
            sizes["engine"] = {r["path"]: r["bytes"] for r in result.rows}
            for name, runner in (("ffmpeg-split", run_split), ("ffmpeg-each", run_each)):
                start = time.perf_counter()
                sizes[name] = {}
                for master in masters:
                    folder = Path(tmp) / name / master.stem
                    folder.mkdir(parents=True)
                    specs = ffmpeg_outputs(presets, folder, (1920, 1080), Fraction(30))
                    runner(ffmpeg, master, specs)
                times[name].append(time.perf_counter() - start)
                for master in masters:
                    for i, preset in enumerate(presets.values()):
                        path = Path(tmp) / name / master.stem / f"o{i}.{preset.extension}"
                        facts = describe_output(path, preset.format)
                        mine = out / "bench" / master.stem / f"o{i}.{preset.extension}"
                        theirs = describe_output(mine, preset.format)
                        assert (facts.width, facts.height) == (theirs.width, theirs.height)
                        sizes[name][f"{master.stem}/o{i}"] = path.stat().st_size
    med = {k: statistics.median(v) for k, v in times.items()}
    engine_bytes = sum(sizes["engine"].values())
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "ffmpeg": subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=True)
        .stdout.splitlines()[0],
        "masters": len(masters), "outputs_per_master": len(presets),
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "median_s": {k: round(v, 2) for k, v in med.items()},
        "engine_vs_split": round(med["engine"] / med["ffmpeg-split"], 3),
        "each_vs_engine": round(med["ffmpeg-each"] / med["engine"], 3),
        "bytes": {"engine": engine_bytes,
                  "ffmpeg-split": sum(sizes["ffmpeg-split"].values()),
                  "ffmpeg-each": sum(sizes["ffmpeg-each"].values())},
    }


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masters", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    ffmpeg = ensure_ffmpeg()
    if ffmpeg is None:
        print("skipped: the ffmpeg command line is not installed and cannot be (not root)")
        return None
    report = measure(build_masters(args.masters, args.seconds), args.repeat, ffmpeg)
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
        print(f"engine / ffmpeg-split wall time: {report['engine_vs_split']:.3f} "
              f"(target <= 1.10); ffmpeg-each / engine: {report['each_vs_engine']:.2f}x "
              "(target >= 1.5x)")
    return report


if __name__ == "__main__":
    main()
