"""What the CLI and the tests call: plan() and render(). No printing here."""

from __future__ import annotations

import io
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from . import manifest
from .catalog import load_catalog
from .errors import EXIT_FAILURES, EXIT_OK, ConfigError
from .image.decode import DEFAULT_MAX_PIXELS
from .job import JobSettings
from .plan import MasterPlan, Plan, expand_ladders, ladder_names
from .plan import plan as build_plan
from .publish.feeds import Feed
from .spec import Channel, Rules, load_config
from .store import Store, write_atomic


def engine_id() -> dict[str, str]:
    """What else decides output bytes, per kind of recipe: the libvips or FFmpeg build."""
    from .image.render import ENGINE_ID
    from .video.render import VIDEO_ENGINE_ID

    return {"image": ENGINE_ID, "video": VIDEO_ENGINE_ID}


def plan(
    catalog: str | Path,
    channels: list[str] | tuple[str, ...] | None = None,
    config_dir: str | Path | None = None,
) -> Plan:
    """Every derivative each master needs for the chosen channels (all by default)."""
    config = load_config(config_dir)
    return build_plan(load_catalog(catalog), config.select(channels), config.presets,
                      engine_id())


@dataclass
class ChannelSummary:
    derivatives: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0  # summed render time of this channel's derivatives


@dataclass
class RunResult:
    """What a run did. The rows themselves are in the run's history file, not in memory."""

    run_id: str
    out: str  # a local folder or an fsspec URL
    manifest_path: str
    wall_s: float
    failed: list[dict] = field(default_factory=list)  # this run's failed rows
    removed: list[dict] = field(default_factory=list)  # stale rows whose files were deleted
    kept_stale: int = 0
    channels: dict[str, ChannelSummary] = field(default_factory=dict)

    @property
    def rows(self) -> list[dict]:
        """This run's rows (rows of channels not selected are carried, not listed), read back
        from OUT/_runs/<run_id>.parquet."""
        history = manifest.read_rows(Store(self.out), f"{manifest.RUNS_DIR}/{self.run_id}.parquet")
        return [r for r in history if r["status"] != "removed"]

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.channels.values())

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURES if self.failed else EXIT_OK


def _summarise(rows: list[dict], out: dict[str, ChannelSummary] | None = None,
               failed: list[dict] | None = None) -> dict[str, ChannelSummary]:
    """Per-channel counts of `rows`, added to `out`; failed rows also go to `failed`."""
    out = {} if out is None else out
    for row in rows:
        s = out.setdefault(row.get("channel") or "(none)", ChannelSummary())
        s.derivatives += 1
        if row["status"] == "failed":
            s.failed += 1
            if failed is not None:
                failed.append(row)
        else:
            s.ok += row["status"] == "ok"
            s.skipped += row["status"] == "skipped"
            s.bytes += row.get("bytes") or 0
            s.seconds += (row.get("render_ms") or 0.0) / 1000
    return out


def _rules(channels: Iterable[Channel], presets: dict) -> dict[tuple[str, str], Rules]:
    """(channel, output) -> its rules; each rung of a ladder is an output of its own."""
    return {
        (c.name, o.name if rung is None else f"{o.name}-{rung}"): c.rules_for(o)
        for c in channels for o in c.outputs
        for rung, _ in ladder_names(o.preset, presets[o.preset])
    }


def _key(row: dict) -> tuple:
    return (row["master_id"], row.get("channel"), row.get("output"))


def _of_channels(table: pa.Table, channels: set[str]) -> pa.ChunkedArray:
    """True for the rows of `table` that belong to one of `channels`."""
    return pc.fill_null(pc.is_in(table.column("channel"),
                                 value_set=pa.array(sorted(channels), pa.string())), False)


@dataclass
class _Settled:
    carried: pa.Table  # rows of channels this run did not render
    stale: pa.Table  # rows of rendered channels that this run did not produce
    orphans: list[str]  # files no row claims any more


def _settle(previous: pa.Table, spool: manifest.Spool, channels: set[str],
            keep_stale: bool) -> _Settled:
    """Sort the previous manifest against this run's rows, in Arrow (no row dicts).

    Rows of channels this run did not render are carried unchanged. A previous row of a rendered
    channel that this run did not produce is stale (its master left the catalog, or its output
    left the channel): dropped with its file, or carried with --keep-stale. A row without a
    channel is a master-level failure: every run states it afresh.
    """
    chosen = _of_channels(previous, channels)
    carried = previous.filter(pc.and_(pc.is_valid(previous.column("channel")), pc.invert(chosen)))
    mine = previous.filter(chosen)
    new = spool.table(["master_id", "channel", "output", "path", "status"])
    stale = mine.filter(pc.invert(pc.fill_null(
        pc.is_in(manifest.row_keys(mine), value_set=manifest.row_keys(new).combine_chunks()),
        False)))
    kept = [carried, stale] if keep_stale else [carried]
    claimed = pa.concat_arrays([
        manifest.claimed_paths(t).combine_chunks() for t in (*kept, new)
    ] or [pa.array([], pa.string())])
    paths = pc.unique(previous.column("path").drop_null().combine_chunks())
    orphans = paths.filter(pc.invert(pc.is_in(paths, value_set=claimed))).to_pylist()
    return _Settled(carried, stale, sorted(orphans))


def _previous_index(previous: pa.Table, channels: set[str]) -> Callable[[MasterPlan], None]:
    """Attaches to a master, when it is submitted, the rows a previous run recorded for it."""
    mine = previous.filter(_of_channels(previous, channels))
    groups = (mine.append_column("_row", pa.array(range(mine.num_rows), pa.int64()))
              .group_by("master_id").aggregate([("_row", "list")]))
    where = {m: i for i, m in enumerate(groups.column("master_id").to_pylist())}
    lists = groups.column("_row_list")

    def prepare(mp: MasterPlan) -> None:
        i = where.get(mp.master.id)
        if i is not None:
            rows = mine.take(lists[i].values).to_pylist()
            mp.previous = {(r["channel"], r["output"]): r for r in rows}

    return prepare




def render(
    catalog: str | Path,
    out: str | Path,
    channels: list[str] | tuple[str, ...] | None = None,
    config_dir: str | Path | None = None,
    scheduler: str = "threads",
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    force: bool = False,
    keep_stale: bool = False,
    on_planned: Callable[[Plan], None] | None = None,
    on_done: Callable[[int], None] | None = None,
    on_info: Callable[[str], None] | None = None,
) -> RunResult:
    """Render what changed since the last run into OUT; write the files, the manifest and the
    run's history.

    Raises ConfigError (nothing rendered) for bad configuration or usage, or when another run
    holds OUT; a bad master never raises, it becomes `failed` rows.
    """
    start = time.perf_counter()
    if max_pixels < 1:
        raise ConfigError(f"--max-pixels: expected a positive number; found {max_pixels}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: expected at least 1; found {workers}")
    out_store = Store(out)
    config = load_config(config_dir)
    chosen = config.select(channels)
    selected = {c.name for c in chosen}
    exclude = Path(out_store.root) if out_store.local else None
    the_plan = build_plan(load_catalog(catalog, exclude=exclude), chosen, config.presets,
                          engine_id())
    if on_planned is not None:
        on_planned(the_plan)

    from . import schedule  # Dask is imported only by runs that render

    schedule.check_scheduler(scheduler)
    out_store.prepare()
    with out_store.exclusive():
        out_store.sweep_temporaries()
        previous = manifest.read_table(out_store)
        if previous.num_rows:  # files a killed run wrote but never recorded: OUT must match
            on_disk = out_store.files_under(sorted(config.channels))
            recorded = set(manifest.claimed_paths(previous).to_pylist())
            out_store.remove(sorted(on_disk - recorded))
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]
        settings = JobSettings(out=out_store.location, run_id=run_id, max_pixels=max_pixels,
                               rules=_rules(chosen, config.presets))
        summary: dict[str, ChannelSummary] = {}
        failed: list[dict] = []
        with tempfile.TemporaryDirectory(prefix="fanout-run-") as tmp:
            spool = manifest.Spool(Path(tmp))

            def on_rows(rows: list[dict]) -> None:
                spool.add(rows)
                _summarise(rows, summary, failed)

            schedule.run(the_plan.masters, the_plan.presets, settings, scheduler, workers,
                         on_done, on_info, on_rows=on_rows,
                         prepare=_previous_index(previous, selected) if not force and (
                             previous.num_rows) else None)
            spool.close()
            settled = _settle(previous, spool, selected, keep_stale)
            stale = settled.stale
            removed = stale
            for name, value in (("run_id", run_id), ("status", "removed")):
                removed = removed.set_column(removed.schema.get_field_index(name), name,
                                             pa.array([value] * stale.num_rows, pa.string()))
            rows = spool.in_order([mp.master.id for mp in the_plan.masters])
            manifest.write_parts(out_store, f"{manifest.RUNS_DIR}/{run_id}.parquet",
                                 [rows, *([] if keep_stale else [removed])])
            manifest_path = manifest.write_parts(
                out_store, manifest.MANIFEST_NAME,
                [settled.carried, *([stale] if keep_stale else []), rows])
            del rows
        out_store.remove(settled.orphans)  # after the manifest; a crash in between leaves
        # unrecorded files, which the next run's sweep above removes
        out_store.sweep_temporaries()  # left by a worker killed mid-write (its master re-ran)
    return RunResult(
        run_id=run_id, out=out_store.location, manifest_path=manifest_path,
        wall_s=time.perf_counter() - start, failed=failed,
        removed=[] if keep_stale else stale.to_pylist(),
        kept_stale=stale.num_rows if keep_stale else 0, channels=dict(sorted(summary.items())),
    )


@dataclass
class RunDiff:
    older: str | None
    newer: str
    added: list[dict]
    rerendered: list[dict]
    removed: list[dict]
    failed: list[dict]
    unchanged: int


def diff(out: str | Path, older: str | None = None, newer: str | None = None) -> RunDiff:
    """Compare two runs' history (default: the latest against the one before it).

    A history file holds what its run did: ok (rendered), skipped, failed, and the stale rows it
    removed (status `removed`). A rendered derivative the older run did not have is `added`.
    """
    out_store = Store(out)
    ids = manifest.runs(out_store)
    if not ids:
        raise ConfigError(f"{out}: no runs recorded (no {manifest.RUNS_DIR}/ folder)")
    for name, value in (("--to", newer), ("--from", older)):
        if value is not None and value not in ids:
            raise ConfigError(f"{name}: no run {value!r} in {out}; runs: {', '.join(ids)}")
    newer = newer or ids[-1]
    if older is None and ids.index(newer) > 0:
        older = ids[ids.index(newer) - 1]
    def history(run: str) -> list[dict]:
        return manifest.read_rows(out_store, f"{manifest.RUNS_DIR}/{run}.parquet")

    before = {_key(r) for r in history(older) if r["status"] in ("ok", "skipped")} if older else (
        set())
    after = history(newer)
    rendered = [r for r in after if r["status"] == "ok"]
    return RunDiff(
        older=older, newer=newer,
        added=[r for r in rendered if _key(r) not in before],
        rerendered=[r for r in rendered if _key(r) in before],
        removed=[r for r in after if r["status"] == "removed"],
        failed=[r for r in after if r["status"] == "failed"],
        unchanged=sum(r["status"] == "skipped" for r in after),
    )


@dataclass
class CheckResult:
    checked: int
    problems: list[tuple[str, str]]  # (path, what is wrong)


def check(out: str | Path, config_dir: str | Path | None = None) -> CheckResult:
    """Verify an output tree against its manifest and its channels' rules."""
    from .image.check import check_tree

    out_path, rows = _published_rows(out)
    config = load_config(config_dir)
    on_disk = Store(out_path).files_under(sorted({r["channel"] for r in rows if r["channel"]}))
    checked, problems = check_tree(
        out_path, rows, _rules(config.channels.values(), config.presets),
        expand_ladders(config.presets))
    problems += [(path, "unrecorded: no manifest row claims this file")
                 for path in sorted(on_disk - set(
                     manifest.claimed_paths(manifest.to_table(rows)).to_pylist()))]
    return CheckResult(checked, problems)


def _published_rows(out: str | Path) -> tuple[Path, list[dict]]:
    out_path = Path(out)
    if not (out_path / manifest.MANIFEST_NAME).is_file():
        raise ConfigError(f"{out_path}: no {manifest.MANIFEST_NAME}: not a fanout output folder")
    return out_path, manifest.read_rows(Store(out_path))


def feed(out: str | Path, kind: str, base_url: str, channel: str = "web",
         output: str | None = None) -> tuple[str, Feed]:
    """A Google (TSV) or Meta (CSV) feed of OUT's product images; (text, feed with problems)."""
    from .publish.feeds import google_tsv, meta_csv, product_feed

    _, rows = _published_rows(out)
    the_feed = product_feed(rows, channel, base_url, kind, output)
    return (google_tsv if kind == "google" else meta_csv)(the_feed), the_feed


def amazon_export(out: str | Path, target: str | Path, channel: str = "amazon") -> list[str]:
    """OUT's Amazon files, named SKU.MAIN / SKU.PT01.., plus listing.csv, as a folder or .zip."""
    from .publish.feeds import amazon_package

    out_path, rows = _published_rows(out)
    return amazon_package(rows, out_path, Path(target), channel)


def export_manifest(out: str | Path, fmt: str) -> str:
    """The manifest as CSV or JSON text."""
    import json

    _, rows = _published_rows(out)
    if fmt == "json":
        return json.dumps(rows, indent=1, default=str) + "\n"
    import pyarrow.csv as pacsv

    buffer = io.BytesIO()
    pacsv.write_csv(manifest.to_table(rows), buffer)
    return buffer.getvalue().decode()


def report(out: str | Path) -> Path:
    """Write OUT/report.html: the contact sheet of every derivative in the manifest."""
    from .publish.report import render_report

    out_path, rows = _published_rows(out)
    target = out_path / "report.html"
    write_atomic(target, render_report(rows, f"fanout report: {out_path.name}").encode())
    return target
