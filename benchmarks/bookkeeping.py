"""The client side of a night at catalog scale, without pixel work (issue #18, item 1).

    python -m benchmarks.bookkeeping --masters 10000 [--masters 100000 ...]

Per N: a synthetic catalog of N tiny masters (a Parquet listing of id and path; each file a
JPEG signature and its id, enough for the kind sniffer), a channel of 30 image outputs, and
a previous manifest of N x 30 rows built directly with pyarrow in engine.rows.SCHEMA (as a
run of the same plan would have left it: each master's plan digest on its rows, the channel's
fingerprint in the metadata, engine/quiet.py). Three nights run against that state, each in a
fresh process so that its peak RSS is its own: nothing changed, 1% of the masters changed
(content rewritten), 1% left the listing.

The pixel work is replaced at its seam, engine.schedule.render_master (the one function a
task calls): the fake job hashes the master as the real one does (engine.masters.hash_master)
and returns each derivative's previous row as `skipped`, or a re-rendered `ok` row when the
master's bytes changed. By default no output files exist: the per-output check the client
makes (the size of each published file, history.outputs_stand) is replaced by a stub, so
stat-ing 30 outputs per master is not measured (the master stats are). With --outputs every
recorded file is made (sparse, at its recorded size) and the check runs for real.

Measured per night: peak RSS of the client process (VmHWM), wall time of planning (the tokens
hint, the catalog, the survey of quiet masters, the plan of the others), begin (the rest of the
previous manifest, the removal guard, claiming paths), submission (the scheduler running the
masters that are not quiet), settling and writing (history and manifest), bytes written to
OUT (manifest, history) and bytes of masters read. The parent stops a night whose machine runs
short of memory (MemAvailable under --min-free-gib) and says so. The last line is one JSON
object for the largest N.

After the nights, what reads OUT at that scale runs as real `fanout` processes (READERS):
`diff --json` of the last night against the first (whose history holds every row), the
manifest exported as CSV, the report page and a Google feed of the channel; wall time and
peak RSS of each.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WORK = Path(__file__).parent / "work" / "bookkeeping"
OUTPUTS = 30
CHUNK = 20_000  # masters per batch while building the synthetic state
SCENARIOS = ("no_change", "left_1pct", "changed_1pct")
JPEG_MAGIC = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
PREVIOUS_RUN = "20261127T010000000000Z-bench0"  # the run the synthetic manifest commits
OUTPUT_TOP = "bench"  # the channel's folder in OUT: every output file is under it


# -- the synthetic state ----------------------------------------------------------------------

def write_config(root: Path) -> Path:
    """A config dir with one channel, `bench`, of 30 image outputs (one preset each)."""
    (root / "channels").mkdir(parents=True, exist_ok=True)
    (root / "presets").mkdir(parents=True, exist_ok=True)
    presets, outputs = [], ['name = "bench"', 'description = "bookkeeping benchmark"']
    for i in range(OUTPUTS):
        presets.append(f'[bench-{i:02}]\nresize = {{ width = {100 + 20 * i}, fit = "fit" }}\n'
                       f'format = "{"jpeg" if i % 2 else "webp"}"\nquality = 80\n')
        outputs.append(f'[[outputs]]\nname = "o{i:02}"\npreset = "bench-{i:02}"\n')
    (root / "presets" / "bench.toml").write_text("\n".join(presets))
    (root / "channels" / "bench.toml").write_text("\n".join(outputs))
    return root


def master_id(i: int) -> str:
    return f"p{i // 1000:04}/m{i:07}"


def content(i: int, version: int = 0) -> bytes:
    return JPEG_MAGIC + f"{master_id(i)} v{version}".encode().ljust(48, b".")


def old_time() -> int:
    return time.time_ns() - 86_400 * 10**9  # written "yesterday": not racy for tonight


def build_masters(root: Path, n: int) -> None:
    stamp = old_time()
    for i in range(n):
        path = root / f"{master_id(i)}.jpg"
        if i % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content(i))
        os.utime(path, ns=(stamp, stamp))


def write_listing(path: Path, root: Path, ids: range | list[int]) -> None:
    ids = list(ids)
    pq.write_table(pa.table({
        "id": pa.array([master_id(i) for i in ids], pa.string()),
        "path": pa.array([str(root / f"{master_id(i)}.jpg") for i in ids], pa.string()),
        "product": pa.array([master_id(i) for i in ids], pa.string()),
    }), path)


def sample_derivatives(config: Path) -> list[Any]:
    """The 30 derivatives the plan gives one master, to lay out the previous manifest."""
    from engine import api
    from engine.catalog import Master
    from engine.plan import plan
    from engine.spec import load_config

    cfg = load_config(config)
    master = Master(id="X", path="/x.jpg", product="X", kind="image")
    derivatives = plan([master], cfg.select(["bench"]), cfg.presets,
                       api.engine_id()).masters[0].derivatives
    assert len(derivatives) == OUTPUTS, len(derivatives)
    return derivatives


def _hex(rng: np.random.Generator, count: int) -> pa.Array:
    raw = rng.integers(0, 256, size=(count, 32), dtype=np.uint8)
    return pa.array([bytes(r).hex() for r in raw], pa.string())


def build_manifest(path: Path, root: Path, n: int, config: Path, run_id: str,
                   started_ns: int, listing: Path) -> None:
    """N x 30 rows in SCHEMA, written in batches (the generator never holds 30M rows), with
    each master's plan digest and the channel's fingerprint, as a run would record them."""
    from engine import api, manifest, masters, quiet
    from engine.catalog import load_catalog
    from engine.rows import SCHEMA
    from engine.spec import load_config

    derivatives = sample_derivatives(config)
    cfg = load_config(config)
    fingerprints = quiet.channel_fingerprints(cfg.select(["bench"]), cfg.presets, api.engine_id())
    digests = [quiet.master_digest(m) for m in load_catalog(listing)]
    rng = np.random.default_rng(18)
    meta = {manifest.META_RUN: run_id.encode(),
            manifest.META_STARTED: str(started_ns).encode(),
            quiet.META_CHANNELS: json.dumps(fingerprints).encode()}
    schema = SCHEMA.with_metadata(meta)
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for lo in range(0, n, CHUNK):
            ids = range(lo, min(n, lo + CHUNK))
            k = len(ids)
            rows = k * OUTPUTS
            mids = [master_id(i) for i in ids]
            paths = [str(root / f"{m}.jpg") for m in mids]
            shas = [hashlib.sha256(content(i)).hexdigest() for i in ids]
            rep = np.repeat(np.arange(k), OUTPUTS)
            per = np.tile(np.arange(OUTPUTS), k)

            def each_master(values: list, typ: pa.DataType = pa.string(),
                            rep: np.ndarray = rep) -> pa.Array:
                return pa.array(values, typ).take(pa.array(rep))

            def each_output(values: list, typ: pa.DataType = pa.string(),
                            per: np.ndarray = per) -> pa.Array:
                return pa.array(values, typ).take(pa.array(per))

            out_paths = [d.path.replace("/X/", f"/{m}/") for m in mids for d in derivatives]
            columns: dict[str, pa.Array] = {
                "run_id": pa.array([run_id] * rows, pa.string()),
                "master_id": each_master(mids), "master_path": each_master(paths),
                "master_sha256": each_master(shas),
                "master_kind": pa.array(["image"] * rows, pa.string()),
                "channel": each_output([d.channel for d in derivatives]),
                "output": each_output([d.output for d in derivatives]),
                "path": pa.array(out_paths, pa.string()),
                "status": pa.array(["ok"] * rows, pa.string()),
                "format": each_output([d.format for d in derivatives]),
                "width": each_output([100 + 20 * j for j in range(OUTPUTS)], pa.int32()),
                "height": each_output([80 + 16 * j for j in range(OUTPUTS)], pa.int32()),
                "bytes": pa.array(rng.integers(2_000, 400_000, rows), pa.int64()),
                "sha256": _hex(rng, rows),
                "quality": pa.array([80] * rows, pa.int32()),
                "recipe_hash": each_output([d.recipe_hash for d in derivatives]),
                "render_ms": pa.array(rng.random(rows) * 50, pa.float64()),
                "product": each_master(mids),
                "position": pa.array([0] * rows, pa.int32()),
                "role": pa.array(["product"] * rows, pa.string()),
                "preset": each_output([d.preset for d in derivatives]),
                "decode_ms": pa.array(rng.random(rows) * 20, pa.float64()),
                "source_width": pa.array([1200] * rows, pa.int32()),
                "source_height": pa.array([1000] * rows, pa.int32()),
                "scale": pa.array(rng.random(rows), pa.float64()),
                "encoder": each_output([f"libvips {d.format} q80" for d in derivatives]),
                "plan_digest": each_master(digests[lo:lo + k]),
            }
            tokens = getattr(masters, "change_token_columns", lambda paths: {})(paths)
            for name, values in tokens.items():
                if name in SCHEMA.names:
                    columns[name] = each_master(values, SCHEMA.field(name).type)
            table = pa.table({f.name: columns.get(f.name, pa.nulls(rows, f.type))
                              for f in SCHEMA}, schema=schema)
            writer.write_table(table)


def setup(n: int, root: Path) -> dict[str, Any]:
    """Masters, listings, config and the previous manifest for N; reused while it is whole."""
    done = root / "ready.json"
    if done.exists():
        return json.loads(done.read_text())
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = time.perf_counter()
    config = write_config(root / "config")
    masters = root / "masters"
    build_masters(masters, n)
    write_listing(root / "listing.parquet", masters, range(n))
    left = set(range(0, n, 100))  # 1% leave the catalog
    write_listing(root / "listing-left.parquet", masters, [i for i in range(n) if i not in left])
    build_manifest(root / "previous.parquet", masters, n, config, PREVIOUS_RUN, time.time_ns(),
                   root / "listing.parquet")
    info = {"n": n, "setup_s": round(time.perf_counter() - start, 1),
            "previous_manifest_bytes": (root / "previous.parquet").stat().st_size}
    done.write_text(json.dumps(info))
    return info


def restore(root: Path, outputs: bool = False) -> Path:
    """OUT as the previous night left it: the manifest, no history; with `outputs`, every file
    it records (made_outputs), kept between nights and made again where a night removed it."""
    out = root / "out"
    if not outputs:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(exist_ok=True)
    for entry in out.iterdir():
        if entry.name != OUTPUT_TOP:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.copyfile(root / "previous.parquet", out / "manifest.parquet")
    if outputs:
        made_outputs(root / "previous.parquet", out)
    return out


def made_outputs(manifest_path: Path, out: Path) -> int:
    """Every file the manifest records, at its recorded size, as a sparse file (no data
    blocks): what the size check of each served file (history.outputs_stand) stats. Files
    already there at their size are left; returns how many were made."""
    made = 0
    parquet = pq.ParquetFile(manifest_path)
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=["path", "bytes"])
        paths = table.column("path").to_pylist()
        sizes = table.column("bytes").to_pylist()
        for folder in {os.path.dirname(p) for p in paths if p}:
            os.makedirs(out / folder, exist_ok=True)
        for path, size in zip(paths, sizes, strict=True):
            if path is None:
                continue
            target = out / path
            try:
                if os.stat(target).st_size == size:
                    continue
            except FileNotFoundError:
                pass
            with open(target, "wb") as fh:
                fh.truncate(size)
            made += 1
    return made


def change_masters(root: Path, n: int) -> int:
    """Rewrite 1% of the masters (other ids than those that leave): new bytes, same size."""
    changed = 0
    for i in range(50, n, 100):
        (root / "masters" / f"{master_id(i)}.jpg").write_bytes(content(i, version=1))
        changed += 1
    return changed


# -- one night, in its own process ------------------------------------------------------------

class Counter:
    master_bytes = 0  # read from masters (the listing's own bytes are counted apart)
    other_bytes = 0
    masters_dir = ""


class _Counting:
    """A master's file that counts what is read from it."""

    def __init__(self, fh: Any, path: str) -> None:  # noqa: ANN401
        self._fh, self._master = fh, path.startswith(Counter.masters_dir)

    def read(self, *args: Any) -> bytes:  # noqa: ANN401
        data = self._fh.read(*args)
        if self._master:
            Counter.master_bytes += len(data)
        else:
            Counter.other_bytes += len(data)
        return data

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        return getattr(self._fh, name)

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


PROGRESS: list[Path] = []  # where a night notes each phase it finished (read if it is stopped)


def _timed(phases: dict[str, float], name: str, fn: Callable) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
            for path in PROGRESS:
                with path.open("a") as fh:
                    fh.write(f"{name} done at {phases[name]:.0f} s, peak RSS "
                             f"{peak_rss_kb() // 1024} MiB\n")
    return wrapper


def fake_job(mp: Any, presets: Any, settings: Any) -> list:  # noqa: ANN401
    """The job without pixels: hash the master like the real one; previous rows come back
    `skipped` when its bytes are the same, re-rendered `ok` rows when they changed."""
    from engine import job
    from engine.masters import hash_master
    from engine.rows import Row, Status

    base = job._base_row(mp, settings.run_id, None)
    sha, _ = hash_master(mp.master.path, settings.max_master_bytes)
    base = base.replace(master_sha256=sha)
    rows = []
    for d in mp.derivatives:
        prev = mp.previous.get((d.channel, d.output))
        if prev is not None and prev.master_sha256 == sha and prev.recipe_hash == d.recipe_hash \
                and prev.path == d.path and not settings.force:
            rows.append(job._with_master(prev, base).replace(
                status=Status.SKIPPED.value, error=None, render_ms=0.0, decode_ms=None))
        else:
            rows.append(base.replace(
                channel=d.channel, output=d.output, preset=d.preset, path=d.path,
                recipe_hash=d.recipe_hash, format=d.format, status=Status.OK.value,
                width=100, height=80, bytes=1234, quality=80, render_ms=10.0,
                sha256=hashlib.sha256(f"{sha}{d.path}".encode()).hexdigest()))
    return rows or [Row(master_id=mp.master.id, status=Status.FAILED.value)]


def peak_rss_kb() -> int:
    """This process's own peak RSS (VmHWM: unlike getrusage's ru_maxrss, not inherited from
    the parent that forked it)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def night(root: Path, scenario: str, outputs: bool = False) -> dict[str, Any]:
    from engine import api, history, manifest, masters, quiet, schedule
    from engine.image.decode import configure

    configure(1)
    PROGRESS.append(root / f"progress-{scenario}.txt")
    PROGRESS[0].unlink(missing_ok=True)
    phases: dict[str, float] = {}
    real_open = masters._open_local
    Counter.masters_dir = str(root / "masters") + "/"
    masters._open_local = lambda path: _Counting(real_open(path), path)  # type: ignore
    schedule.render_master = fake_job  # type: ignore[assignment]
    # Without --outputs no output files exist: every published file "stands" (see the
    # module's docstring); with them, the real size check stats each one.
    for module in (history, api) if not outputs else ():
        if hasattr(module, "outputs_stand"):
            module.outputs_stand = lambda store, table: pa.array(  # type: ignore[attr-defined]
                [True] * table.num_rows, pa.bool_())
    api.load_catalog = _timed(phases, "catalog", api.load_catalog)
    quiet.survey = _timed(phases, "survey", quiet.survey)
    api.build_plan = _timed(phases, "plan", api.build_plan)
    api._Night.begin = _timed(phases, "begin", api._Night.begin)
    schedule.run = _timed(phases, "submission", schedule.run)
    api._Night.commit = _timed(phases, "commit", api._Night.commit)
    manifest.write_parts = _timed(phases, "writing", manifest.write_parts)
    quiet.write = _timed(phases, "writing", quiet.write)
    for name in ("read_known",):
        for module in (api, manifest, history):
            if hasattr(module, name):
                setattr(module, name, _timed(phases, "hints", getattr(module, name)))
    listing = root / ("listing-left.parquet" if scenario == "left_1pct" else "listing.parquet")
    out = root / "out"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_before, cpu_before = peak_rss_kb(), usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    result = api.render(listing, out, channels=["bench"], config_dir=root / "config",
                        on_info=lambda message: None)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    counts: dict[str, int] = {}
    for summary in result.channels.values():
        counts["ok"] = counts.get("ok", 0) + summary.ok
        counts["skipped"] = counts.get("skipped", 0) + summary.skipped
        counts["failed"] = counts.get("failed", 0) + summary.failed
    history_bytes = sum(p.stat().st_size for p in (out / manifest.RUNS_DIR).iterdir())
    settling = phases.get("commit", 0.0) - phases.get("writing", 0.0)
    return {
        "scenario": scenario, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        # The survey (quiet.py) and the plan run inside begin: planning counts them, begin not.
        "planning_s": round(sum(phases.get(k, 0) for k in ("hints", "catalog", "survey", "plan")),
                            2),
        "begin_s": round(phases.get("begin", 0) - phases.get("survey", 0)
                         - phases.get("plan", 0), 2),
        "submission_s": round(phases.get("submission", 0), 2),
        "settling_s": round(settling, 2), "writing_s": round(phases.get("writing", 0), 2),
        "phases": {k: round(v, 2) for k, v in phases.items()},
        "client_peak_rss_mb": round(peak_rss_kb() / 1024),
        "rss_after_imports_mb": round(rss_before / 1024),
        "manifest_bytes": (out / manifest.MANIFEST_NAME).stat().st_size,
        "history_bytes": history_bytes,
        "master_bytes_read": Counter.master_bytes, "listing_bytes_read": Counter.other_bytes,
        "rows": counts, "removed": len(result.removed),
    }


# -- the parent: run each night in a child and watch the machine's memory ----------------------

def mem_available_gib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def _reached(root: Path, scenario: str) -> str:
    done = root / f"progress-{scenario}.txt"
    return done.read_text().strip().replace("\n", "; ") if done.exists() else "no phase finished"


def watch(cmd: list[str], min_free: float, limit_s: float | None = None,
          stdout: Any = subprocess.PIPE, stderr: Any = None) -> dict[str, Any]:  # noqa: ANN401
    """Run `cmd`, watching its peak RSS (VmHWM) and the machine's available memory: killed when
    that falls under `min_free` GiB or it runs past `limit_s`. Its stdout, wall time, peak
    RSS, exit code, and why it was stopped (None when it finished)."""
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, text=True)
    low, peak_kb, stopped = None, 0, None
    start = time.perf_counter()
    while proc.poll() is None:
        with contextlib.suppress(OSError), open(f"/proc/{proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        free = mem_available_gib()
        if free < min_free:
            low = free
            proc.kill()
            break
        if limit_s is not None and time.perf_counter() - start > limit_s:
            proc.kill()
            stopped = (f"stopped at the time limit of {limit_s:.0f} s (--limit-s), unfinished; "
                       f"its RSS had reached {peak_kb / 1024:.0f} MiB")
            break
        time.sleep(0.1)
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    if low is not None:
        stopped = (f"killed after {wall:.0f} s: the machine's available memory fell to "
                   f"{low:.1f} GiB (limit {min_free} GiB); its RSS had reached "
                   f"{peak_kb / 1024:.0f} MiB")
    return {"stdout": out or "", "wall_s": round(wall, 2), "peak_rss_mb": round(peak_kb / 1024),
            "rc": proc.returncode, "stopped": stopped}


def run_child(root: Path, scenario: str, min_free: float,
              limit_s: float | None = None, outputs: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bookkeeping", "--night", scenario,
           "--root", str(root), *(["--outputs"] if outputs else [])]
    run = watch(cmd, min_free, limit_s)
    if run["stopped"]:
        return {"scenario": scenario, "phases_done": _reached(root, scenario),
                "stopped": run["stopped"].replace("its RSS", "client RSS")}
    if run["rc"]:
        return {"scenario": scenario, "stopped": f"exit code {run['rc']}"}
    return json.loads(run["stdout"].strip().splitlines()[-1])


# What reads OUT after a night, at scale: `fanout diff` (the last night against the first, whose
# history holds every row: the rendered rows' keys are looked up in it), the manifest exported
# as CSV, the report page (its default selection), a Google feed of the channel (a product per
# master; it exits 1: the fake job's re-rendered rows are under Google's minimum size, each
# reported). Each a real `fanout` process, output thrown away.
READERS = {
    "diff": ["diff", "{out}", "--json"],
    "export_csv": ["feed", "manifest", "{out}"],
    "report": ["report", "{out}"],
    "feed_google": ["feed", "google", "{out}", "--channel", "bench", "--base-url",
                    "https://cdn.example.com/img"],
}


# `fanout ARGS...` that writes its own peak RSS (VmHWM) to PEAK_FILE as it exits: the parent's
# sampling misses a short process's peak, and getrusage's ru_maxrss for a child counts the
# parent's memory it was forked from.
PEAK_WRAPPER = """
import atexit, sys
def peak(path=sys.argv[1]):
    with open("/proc/self/status") as fh:
        hwm = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    with open(path, "w") as fh:
        fh.write(hwm)
atexit.register(peak)
sys.argv = ["fanout", *sys.argv[2:]]
from engine.cli import main
main()
"""


def run_readers(root: Path, min_free: float, limit_s: float | None) -> dict[str, Any]:
    out = root / "out"
    first = out / "_runs" / f"{PREVIOUS_RUN}.parquet"  # the synthetic first night's history
    shutil.copyfile(root / "previous.parquet", first)
    found: dict[str, Any] = {}
    for name, args in READERS.items():
        peak_file = root / f"peak-{name}.txt"
        peak_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-c", PEAK_WRAPPER, str(peak_file),
               *(a.format(out=out) for a in args)]
        errors = root / f"{name}.stderr"  # a feed's warnings: one line per product left out
        with open(errors, "w") as err:
            run = watch(cmd, min_free, limit_s, stdout=subprocess.DEVNULL, stderr=err)
        if peak_file.exists():  # else it was killed: the sampled peak
            run["peak_rss_mb"] = round(int(peak_file.read_text()) / 1024)
            peak_file.unlink()
        lines = errors.read_text(errors="replace").splitlines()
        errors.unlink()
        found[name] = {"wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"],
                       **({"stopped": run["stopped"]} if run["stopped"] else {}),
                       **({"exit_code": run["rc"], "stderr_lines": len(lines),
                           "last_stderr": lines[-1] if lines else ""}
                          if run["rc"] and not run["stopped"] else {})}
    first.unlink()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masters", type=int, action="append")
    parser.add_argument("--min-free-gib", type=float, default=6.0)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic state")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="which nights to run, comma-separated")
    parser.add_argument("--limit-s", type=float, help="stop a night that runs longer")
    parser.add_argument("--outputs", action="store_true",
                        help="make every recorded output file (sparse, at its recorded size) "
                        "so that the nights' size check of each served file runs for real; "
                        "N x 30 files: 3 million at 100,000 masters (30 million do not fit "
                        "this VM's 16.7 million inodes)")
    parser.add_argument("--night", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.night:
        print(json.dumps(night(args.root, args.night, args.outputs)))
        return
    last: dict[str, Any] = {}
    for n in args.masters or [10_000]:
        root = WORK / f"n{n}"
        info = setup(n, root)
        print(f"N={n}: setup {info['setup_s']} s, previous manifest "
              f"{info['previous_manifest_bytes']} bytes ({n * OUTPUTS} rows)", flush=True)
        nights = {}
        for scenario in [s for s in SCENARIOS if s in args.scenarios.split(",")]:
            if scenario == "changed_1pct":
                change_masters(root, n)
            start = time.perf_counter()
            restore(root, args.outputs)
            if args.outputs and scenario == SCENARIOS[0]:
                print(f"  outputs made in {time.perf_counter() - start:.1f} s", flush=True)
            result = run_child(root, scenario, args.min_free_gib, args.limit_s, args.outputs)
            nights[scenario] = result
            if "wall_s" in result:
                result["per_master_ms"] = round(1000 * result["wall_s"] / n, 3)
            print(f"  {json.dumps(result)}", flush=True)
            if "stopped" in result:
                break
        readers = {}
        if nights and not any("stopped" in r for r in nights.values()):
            readers = run_readers(root, args.min_free_gib, args.limit_s)
            print(f"  readers: {json.dumps(readers)}", flush=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            (root / "ready.json").unlink(missing_ok=True)  # masters were changed
        no_change = nights.get("no_change", {})
        last = {
            "masters": n, "rows": n * OUTPUTS, "output_files": args.outputs,
            "client_peak_rss_mb": max((r.get("client_peak_rss_mb", 0)
                                       for r in nights.values()), default=None),
            **{f"{s if s != 'no_change' else 'no_change'}_s": nights.get(s, {}).get("wall_s")
               for s in SCENARIOS},
            "history_bytes_no_change": no_change.get("history_bytes"),
            "manifest_bytes_no_change": no_change.get("manifest_bytes"),
            "master_bytes_read_no_change": no_change.get("master_bytes_read"),
            **{f"{name}_s": r["wall_s"] for name, r in readers.items()},
            **{f"{name}_peak_rss_mb": r["peak_rss_mb"] for name, r in readers.items()},
            "stopped": {s: r["stopped"] for s, r in {**nights, **readers}.items()
                        if "stopped" in r} or None,
        }
    print(json.dumps(last))


if __name__ == "__main__":
    main()
