"""What the CLI and the tests call: plan(), render(), check(), diff(), recover() and the
exports. No printing here."""

from __future__ import annotations

import io
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

import pyarrow as pa
import pyarrow.compute as pc

from . import history, manifest, quiet, scratch
from .catalog import Master, load_catalog
from .errors import EXIT_FAILURES, EXIT_OK, ConfigError
from .history import RunDiff, diff
from .limits import DEFAULT_MAX_PIXELS
from .manifest import Row, Status
from .masters import Token
from .plan import Derivative, Plan, expand_ladders, ladder_names
from .plan import plan as build_plan
from .publish.feeds import Feed
from .rows import TableRows
from .spec import Channel, Rules, load_config, snapshot
from .spec.loader import Config
from .store import Protected, Store, is_url, stream_atomic, text_writer, write_atomic

if TYPE_CHECKING:
    from .job import JobSettings
    from .publish.report import Totals

__all__ = ["RunDiff", "diff"]


def engine_id() -> dict[str, str]:
    """What else decides output bytes, per kind of recipe: the libvips or FFmpeg build."""
    from .image.render import ENGINE_ID
    from .video.encoders import VIDEO_ENGINE_ID

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
    failed: int = 0  # failed and kept
    kept: int = 0  # failed, still serving the last good file
    bytes: int = 0
    seconds: float = 0.0  # summed render time of this channel's derivatives


@dataclass
class RunResult:
    """What a run did. The rows themselves are in the run's history file, not in memory."""

    run_id: str
    out: str  # a local folder or an fsspec URL
    manifest_path: str
    wall_s: float
    failed: list[Row] = field(default_factory=list)  # this run's failed and kept rows
    # stale rows whose files were deleted (a TableRows: Row objects only as they are read)
    removed: Sequence[Row] = field(default_factory=list)
    kept_stale: int = 0
    channels: dict[str, ChannelSummary] = field(default_factory=dict)
    cleaned: int = 0  # files an interrupted run had created, removed before this one

    @property
    def rows(self) -> list[Row]:
        """This run's rows (rows of channels not selected are carried, not listed), read back
        from OUT: the manifest while this run is the last, else rebuilt from the history."""
        return history.run_rows(Store(self.out), self.run_id)

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.channels.values())

    @property
    def kept(self) -> int:
        return sum(s.kept for s in self.channels.values())

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURES if self.failed else EXIT_OK


def _summarise(rows: Iterable[Row], out: dict[str, ChannelSummary] | None = None,
               failed: list[Row] | None = None) -> dict[str, ChannelSummary]:
    """Per-channel counts of `rows`, added to `out`; failed and kept rows also go to `failed`."""
    out = {} if out is None else out
    for row in rows:
        s = out.setdefault(row.channel or "(none)", ChannelSummary())
        s.derivatives += 1
        if row.status in (Status.FAILED, Status.KEPT):
            s.failed += 1
            s.kept += row.status == Status.KEPT
            if failed is not None:
                failed.append(row)
        else:
            s.ok += row.status == Status.OK
            s.skipped += row.status == Status.SKIPPED
            s.bytes += row.bytes or 0
            s.seconds += (row.render_ms or 0.0) / 1000
    return out


def _summarise_table(rows: pa.Table, out: dict[str, ChannelSummary]) -> None:
    """_summarise for rows recorded without a task (skipped and n/a ones), column-wise."""
    if not rows.num_rows:
        return
    skipped = pc.equal(rows.column("status"), Status.SKIPPED.value)
    table = pa.table({"channel": rows.column("channel"),
                      "skipped": pc.cast(skipped, pa.int64()),
                      "bytes": pc.fill_null(rows.column("bytes"), 0)})
    for r in table.group_by("channel").aggregate(
            [("skipped", "count"), ("skipped", "sum"), ("bytes", "sum")]).to_pylist():
        s = out.setdefault(r["channel"] or "(none)", ChannelSummary())
        s.derivatives += r["skipped_count"]
        s.skipped += r["skipped_sum"]
        s.bytes += r["bytes_sum"]


def _rules(channels: Iterable[Channel], presets: dict) -> dict[tuple[str, str], Rules]:
    """(channel, output) -> its rules; each rung of a ladder is an output of its own."""
    return {
        (c.name, o.name if rung is None else f"{o.name}-{rung}"): c.rules_for(o)
        for c in channels for o in c.outputs
        for rung, _ in ladder_names(o.preset, presets[o.preset])
    }


def _stored_config(store: Store) -> tuple[Config, str] | None:
    """The configuration OUT's last run used, and where it is kept; None if OUT has none."""
    relative = manifest.meta_value(manifest.read_meta(store), manifest.META_CONFIG)
    if relative is None:
        return None
    data = store.read(relative)
    where = f"{store.location}/{relative}"
    if data is None:
        raise ConfigError(f"{where}: the configuration this OUT was made with is missing; "
                          "pass --config-dir, or --reset-config for the built-in one")
    return snapshot.decode(data, where), where


def _config_for(store: Store, config_dir: str | Path | None, reset: bool,
                info: Callable[[str], None]) -> Config:
    """The configuration a run or a check uses: --config-dir (on top of the built-in one) when
    given or with --reset-config; else the one OUT was made with, so that forgetting
    --config-dir never undoes outputs; else the built-in one."""
    stored = None if config_dir is not None or reset else _stored_config(store)
    if stored is None:
        return load_config(config_dir)
    config, where = stored
    changed = snapshot.differences(config, load_config(None))
    if changed:  # the same as the built-in one: nothing worth a line
        info(f"using the configuration stored with OUT ({where}); the built-in one differs "
             f"({'; '.join(changed[:5])}{'; ...' if len(changed) > 5 else ''}): pass "
             "--reset-config to use it, or --config-dir")
    return config


def _refuse_out_in_catalog(catalog: str | Path, store: Store) -> None:
    """OUT must not be the catalog's folder: its outputs would be read as masters."""
    if store.local and not is_url(str(catalog)) and Path(catalog).is_dir() and (
        Path(catalog).resolve() == Path(store.root)
    ):
        raise ConfigError(f"{store.root}: --out is the catalog's folder; its outputs would "
                          "become masters of the next run: choose another folder")


def _claim_new_paths(the_plan: Plan, recorded: set[str], store: Store,
                     masters: Protected) -> list[str]:
    """The planned paths no earlier row records (`recorded`): they may hold a file fanout did
    not write, which a derivative must never overwrite (it fails instead). Returns the free
    ones, which the run may create."""
    new = {d.path for mp in the_plan.masters for d in mp.derivatives
           if d.path is not None and d.error is None and d.path not in recorded}
    taken = store.existing(sorted(new))  # a master kept under OUT among them
    if store.local:  # a path that is a master's missing tonight (no token: named by path)
        mine = set(masters.paths)
        taken |= {p for p in new if store.path(p) in mine}
    for mp in the_plan.masters:
        mp.derivatives = [
            d if d.path not in taken else _refused(d, store)
            for d in mp.derivatives
        ]
    return sorted(new - taken)


def _refused(d: Derivative, store: Store) -> Derivative:
    assert d.path is not None
    why = store.unsafe(d.path) or (f"{store.location}/{d.path} exists and was not written by "
                                   "fanout; fanout never overwrites a file it does not own: "
                                   "move it away")
    return replace(d, error=why)


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
    allow_removals: bool = False,
    max_removals: str | int | None = None,
    reset_config: bool = False,
    max_master_bytes: int | None = None,
    on_planned: Callable[[int], None] | None = None,
    on_done: Callable[[int], None] | None = None,
    on_info: Callable[[str], None] | None = None,
    verify: bool = False,
    memory: str | None = None,
) -> RunResult:
    """Render what changed since the last run into OUT; write the files, the manifest and the
    run's history.

    Raises ConfigError (nothing rendered) for bad configuration or usage, when another run
    holds OUT, or (RemovalRefused) when the run would remove more published files than the
    removal guard allows; a bad master never raises, it becomes `failed` or `kept` rows.
    A master whose change token (size, mtime, ctime, inode; an object store's version) is the
    one recorded is not read; `verify` reads and hashes every master, as the job decides.
    `memory` ("12GiB"; default FANOUT_MEMORY, else 80% of what is available): what a local
    run's masters may take at once, by their estimated peaks (schedule.MemoryGate).
    """
    start = time.perf_counter()
    started_ns = time.time_ns()  # before any master is stat-ed: the racy rule's reference
    if max_pixels < 1:
        raise ConfigError(f"--max-pixels: expected a positive number; found {max_pixels}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: expected at least 1; found {workers}")
    if max_master_bytes is not None and max_master_bytes < 1:
        raise ConfigError(f"--max-master-bytes: expected a positive number; "
                          f"found {max_master_bytes}")
    from . import schedule  # Dask, the codecs and the job are imported only by runs that render

    memory = memory or os.environ.get(schedule.MEMORY_ENV)
    budget = schedule.parse_bytes(memory, "--memory") if memory else None  # before OUT is touched
    info = on_info or (lambda message: None)
    out_store = Store(out)
    _refuse_out_in_catalog(catalog, out_store)
    history.removal_limit(max_removals, 0)  # a malformed --max-removals stops the run now
    config = _config_for(out_store, config_dir, reset_config, info)
    chosen = config.select(channels)
    exclude = Path(out_store.root) if out_store.local else None
    known = None if verify or force else manifest.read_known(out_store)
    masters = load_catalog(catalog, exclude=exclude, known=known)
    del known  # a million masters' tokens: not needed past the catalog
    if on_planned is not None:
        on_planned(len(masters))

    from .job import JobSettings

    scratch.sweep()  # scratch folders of fanout processes killed with -9
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]
    settings = JobSettings(
        out=out_store.location, run_id=run_id, max_pixels=max_pixels, force=force,
        rules=_rules(chosen, config.presets),
        **({"max_master_bytes": max_master_bytes} if max_master_bytes else {}))
    with schedule.connect(scheduler) as client, scratch.scratch("run") as spool_dir:
        out_store.prepare()
        with out_store.exclusive():
            night = _Night(out_store, masters, chosen, settings, config, spool_dir,
                           started_ns, verify)
            night.catalog = str(catalog) if is_url(str(catalog)) else str(Path(catalog).resolve())
            night.begin(keep_stale, allow_removals, max_removals, on_done)
            try:
                schedule.run(night.todo, night.plan.presets, settings, scheduler, workers,
                             on_done, info, on_rows=night.add, client=client,
                             prepare=night.prepare, memory=budget)
                result = night.commit(keep_stale)
            except BaseException:
                night.undo()
                raise
    result.wall_s = time.perf_counter() - start
    return result


class _Night:
    """One run into OUT, under its lock: what it found, what it made, and how it commits."""

    def __init__(self, store: Store, masters: list[Master], chosen: list[Channel],
                 settings: JobSettings, config: Config, spool_dir: Path,
                 started_ns: int | None = None, verify: bool = False) -> None:
        self.store, self.masters, self.chosen = store, masters, chosen
        self.catalog = ""  # where the masters were listed (render sets it; recorded on commit)
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        self.trust_tokens = not (verify or settings.force)
        self.quiet = pa.array([], pa.string())  # masters recorded unchanged: not in the history
        self.selected = {c.name for c in chosen}
        self.settings, self.config = settings, config
        self.protect = Protected(  # the masters: never deleted, whatever path names them
            [m.path for m in masters if m.token is None or m.token[3] is None],
            [m.token[3] for m in masters if m.token is not None and m.token[3] is not None])
        self.summary: dict[str, ChannelSummary] = {}
        self.failed: list[Row] = []
        self.failing: dict[str, str] = {}  # masters none of whose derivatives stands tonight
        self.committed = False
        self.spool = manifest.Spool(spool_dir)
        self.writes: list[str] | None = None  # paths this run may create, once claimed
        self.journaled: list[str] = []  # and those it may write over (its journal: begin)
        self.recorded: set[str] = set()  # of the paths the run looked up, those rows claim

    def begin(self, keep_stale: bool, allow: bool, max_removals: str | int | None,
              on_done: Callable[[int], None] | None = None) -> None:
        """Find the quiet masters (quiet.py: recorded without a plan or a task), plan the
        others, settle what an interrupted run left, apply the removal guard, claim new paths,
        and record at once the masters whose change token says nothing changed (no task)."""
        store = self.store
        meta = manifest.read_meta(store)
        ids = engine_id()
        self.survey = (quiet.survey(store, meta, self.masters, self.chosen, self.config.presets,
                                    ids, history.outputs_stand)
                       if self.trust_tokens and meta else quiet.Survey())
        self.plan = build_plan([m for m in self.masters if m.id not in self.survey.quiet],
                               self.chosen, self.config.presets, ids)
        self.todo = self.plan.masters  # the masters that need a task (unchanged ones dropped)
        interrupted = history.interrupted_paths(store)
        rest = self._rest(interrupted)
        self.previous = rest.table
        store.sweep_temporaries(self._beside(interrupted))
        self.cleaned = history.finish_interrupted(
            store, manifest.meta_value(meta, manifest.META_RUN), self.recorded, self.protect)
        if self._replan_unknown_kinds():
            self._rest(set(), load=False)
        history.guard(history.predict_removals(self.previous, self.plan.masters, self.selected,
                                               keep_stale, self.survey.quiet_published),
                      allow, max_removals, store.location)
        self.writes = _claim_new_paths(self.plan, self.recorded, store, self.protect)
        # The journal names every path the run may write: the new ones it claimed (undone if it
        # never commits) and the recorded ones it may overwrite (kept: a row claims them), so
        # that the next run looks for its temporaries where they can be.
        self.journaled = sorted(set(self.writes) | (self._planned() & self.recorded))
        manifest.write_journal(store, self.settings.run_id, self.journaled, [])
        if on_done is not None and self.survey.quiet:
            on_done(len(self.survey.quiet))
        if self.trust_tokens and self.previous.num_rows:
            done, rows, self.quiet = history.unchanged_masters(
                self.previous, meta, self.plan.masters, self.selected, store,
                self.settings.run_id)
            if done:
                self.spool.add_table(rows)
                _summarise_table(rows, self.summary)
                self.todo = [mp for i, mp in enumerate(self.plan.masters) if i not in done]
                if on_done is not None:
                    on_done(len(done))
        self.prepare = (history.previous_index(self.previous, self.selected,
                                               [mp.master.id for mp in self.todo])
                        if self.previous.num_rows else None)

    def _planned(self) -> set[str]:
        """The paths of the derivatives planned tonight (quiet masters' are not)."""
        return {d.path for mp in self.plan.masters for d in mp.derivatives if d.path}

    def _beside(self, also: Iterable[str] = ()) -> set[str]:
        """Where this run (or, with `also`, an interrupted one) may have left a temporary: its
        planned paths and OUT's own files (the manifest, the history, the configuration)."""
        return self._planned() | set(also) | {manifest.MANIFEST_NAME,
                                              manifest.history_path("run"),
                                              f"{snapshot.CONFIG_DIR}/config"}

    def _rest(self, also: set[str], load: bool = True) -> quiet.Rest:
        """Read the previous rows of the masters that are not quiet (`load`), and which of
        tonight's planned paths (and `also`) earlier rows claim; a path a quiet master's file
        holds is not another master's to write."""
        lookup = self._planned() | also
        rest = quiet.rest(self.store, self.survey.quiet, self.selected, lookup, load)
        self.recorded |= rest.recorded
        if rest.claims:
            for mp in self.plan.masters:
                mp.derivatives = [
                    replace(d, error=f"output path {d.path!r} is claimed by several "
                            f"derivatives: {mp.master.id} ({d.output}), {rest.claims[d.path]}")
                    if d.path in rest.claims else d for d in mp.derivatives]
        return rest

    def _replan_unknown_kinds(self) -> bool:
        """A master whose content cannot be told tonight (missing, unreadable) is planned as
        the kind it was last time, so that its derivatives fail as themselves and keep their
        last good files (rather than as image outputs it never had)."""
        unknown = {mp.master.id: i for i, mp in enumerate(self.plan.masters)
                   if mp.master.kind is None}
        if not unknown or not self.previous.num_rows:
            return False
        known = self.previous.filter(pc.and_(
            pc.is_in(self.previous.column("master_id"),
                     value_set=pa.array(sorted(unknown), pa.string())),
            pc.is_valid(self.previous.column("master_kind"))))
        hints = dict(zip(known.column("master_id").to_pylist(),
                         known.column("master_kind").to_pylist(), strict=True))
        for master_id, kind in hints.items():
            i = unknown[master_id]
            master = replace(self.plan.masters[i].master, kind=kind)
            self.plan.masters[i] = build_plan([master], self.chosen, self.config.presets,
                                              engine_id()).masters[0]
        return bool(hints)

    def add(self, rows: list[Row]) -> None:
        master = rows[0].master_id if rows else None
        token = self.plan_tokens().get(master)
        digest = self.digests().get(master)
        for row in rows:  # the token the catalog saw, on the rows of the bytes the job hashed
            if token is not None and row.status in history.STANDING:
                (row.master_size, row.master_mtime_ns, row.master_ctime_ns, row.master_inode,
                 row.master_etag) = token
                row.plan_digest = digest
        self.spool.add(rows)
        _summarise(rows, self.summary, self.failed)
        history.failing_masters(rows, self.failing)

    def commit(self, keep_stale: bool) -> RunResult:
        """Write the history, the configuration and the manifest (the commit), then delete
        what left the catalog or its channel."""
        store, run_id = self.store, self.settings.run_id
        self.spool.close()
        settled = history.settle(
            self.previous, self.spool.table(["master_id", "channel", "output", "path", "status"]),
            self.selected, keep_stale, self.failing, run_id, store)
        _summarise(manifest.from_table(settled.kept), self.summary, self.failed)
        removed = history.with_status(settled.stale, run_id, Status.REMOVED)
        order = [m.id for m in self.masters]
        rows = self.spool.in_order(order)
        manifest.write_journal(store, run_id, self.journaled, settled.orphans)
        changed = rows.filter(pc.invert(pc.is_in(
            rows.column("master_id"), value_set=self.quiet))) if len(self.quiet) else rows
        # Tonight's skipped rows, and the quiet masters' published rows (restamped skipped).
        unchanged = (pc.sum(pc.equal(rows.column("status"), Status.SKIPPED.value)).as_py()
                     or 0) + self.survey.quiet_published
        manifest.write_parts(  # a delta: what this run changed (manifest.META_HISTORY)
            store, manifest.history_path(run_id, manifest.PENDING_SUFFIX),
            [changed, settled.kept, settled.stale if keep_stale else removed],
            manifest.encode_meta({manifest.META_HISTORY: manifest.HISTORY_DELTA,
                                  manifest.META_CHANNELS: json.dumps(sorted(self.selected)),
                                  manifest.META_UNCHANGED: str(unchanged)}))
        del changed
        config_path, config_data = snapshot.encode(self.config)
        if store.read(config_path) != config_data:
            store.write(config_path, config_data)
        fingerprints = quiet.channel_fingerprints(self.chosen, self.config.presets, engine_id())
        manifest_path = quiet.write(  # the commit
            store, manifest.encode_meta({
                manifest.META_RUN: run_id, manifest.META_CONFIG: config_path,
                manifest.META_STARTED: str(self.started_ns), manifest.META_CATALOG: self.catalog,
                quiet.META_CHANNELS: json.dumps(fingerprints, sort_keys=True)}),
            [*([settled.stale] if keep_stale else []), settled.kept], rows,
            self.survey.quiet, self.selected, run_id, order, self.survey.in_order,
            lambda batch: _summarise_table(batch, self.summary))
        self.committed = True
        del rows
        store.rename(manifest.history_path(run_id, manifest.PENDING_SUFFIX),
                     manifest.history_path(run_id))
        store.remove(settled.orphans, self.protect)
        store.sweep_temporaries(self._beside())  # a worker killed mid-write (its master re-ran)
        store.remove([manifest.history_path(run_id, manifest.JOURNAL_SUFFIX)])  # done: last
        return RunResult(
            run_id=run_id, out=store.location, manifest_path=manifest_path, wall_s=0.0,
            failed=self.failed,
            removed=[] if keep_stale else TableRows(settled.stale),
            kept_stale=settled.stale.num_rows if keep_stale else 0,
            channels=dict(sorted(self.summary.items())), cleaned=self.cleaned)

    def plan_tokens(self) -> dict[str, Token]:
        """master id -> the change token the catalog read (planned masters with one)."""
        if not hasattr(self, "_tokens"):
            self._tokens = {mp.master.id: mp.master.token for mp in self.plan.masters
                            if mp.master.token is not None}
        return self._tokens

    def digests(self) -> dict[str, str]:
        """master id -> its plan digest (quiet.master_digest; planned masters with one)."""
        if not hasattr(self, "_digests"):
            found = ((mp.master.id, quiet.master_digest(mp.master)) for mp in self.plan.masters)
            self._digests = {m: d for m, d in found if d is not None}
        return self._digests

    def undo(self) -> None:
        """A run stopped before it committed (interrupted, disk full): delete the files it
        created and its pending history now. Its journal stays for the next run, which
        repeats this in case a worker was still writing."""
        self.spool.abandon()
        if self.committed or self.writes is None:
            return
        try:
            self.store.remove([p for p in self.writes if p not in self.recorded],
                              self.protect)
            self.store.remove([manifest.history_path(self.settings.run_id,
                                                     manifest.PENDING_SUFFIX)])
            self.store.sweep_temporaries(self._beside())
        except OSError:
            pass  # the journal lets the next run finish this


@dataclass
class CheckResult:
    checked: int
    problems: list[tuple[str, str]]  # (path, what is wrong)
    foreign: list[str] = field(default_factory=list)  # files under OUT fanout did not write
    kept: list[Row] = field(default_factory=list)  # rows serving a last good file


# What fanout keeps at the top of OUT besides the channels' folders.
OWN_ENTRIES = (manifest.MANIFEST_NAME, manifest.RUNS_DIR, snapshot.CONFIG_DIR, ".fanout.lock",
               "report.html")


CHECK_BATCH = 100_000  # files under OUT looked up in check's claims at a time


def check(out: str | Path, config_dir: str | Path | None = None,
          reset_config: bool = False,
          on_info: Callable[[str], None] | None = None) -> CheckResult:
    """Verify an output tree against its manifest and its channels' rules (the configuration
    OUT was made with unless --config-dir or --reset-config says otherwise).

    Files under OUT that fanout did not write are listed as foreign, and left alone; files an
    interrupted run created (the next render removes them) are problems.
    """
    from .checks import PathSet, check_tree

    out_path = _manifest_folder(out)
    store = Store(out_path)
    config = _config_for(store, config_dir, reset_config, on_info or (lambda message: None))
    rules = _rules(config.channels.values(), config.presets)
    presets = expand_ladders(config.presets)
    checked, problems, kept, claimed = 0, [], [], PathSet()
    for table in _streamed(store):  # a batch at a time: 30 million rows are never held
        rows = manifest.from_table(table.filter(manifest.published_mask(table)))
        done, found = check_tree(out_path, rows, rules, presets)
        checked, problems = checked + done, problems + found
        claimed.update(r.path for r in rows)
        kept += [r for r in rows if r.status == Status.KEPT]
    top = [p.name for p in out_path.iterdir() if p.name not in OWN_ENTRIES]
    walked, unclaimed = store.walk_files(top), set()  # neither tree nor claims held as strings
    while batch := list(itertools.islice(walked, CHECK_BATCH)):
        unclaimed.update(claimed.missing(batch))
    interrupted = {p for journal in store.files_under([manifest.RUNS_DIR])
                   if journal.endswith(manifest.JOURNAL_SUFFIX)
                   for p in manifest.read_journal(store, journal)["write"]}
    problems += [(path, "unrecorded: written by an interrupted run; the next render removes "
                        "it") for path in sorted(unclaimed & interrupted)]
    return CheckResult(checked, problems, sorted(unclaimed - interrupted), kept)


def recover(out: str | Path) -> tuple[int, str | None]:
    """Rebuild a corrupt or lost OUT/manifest.parquet from the run history in OUT/_runs.

    The unreadable manifest is kept as _runs/corrupt-manifest-<time>.parquet.bak; no output
    file is touched. Returns (rows, the run the rebuilt manifest commits).
    """
    store = Store(out)
    rows, last = history.replay(store)
    if last is None:
        raise ConfigError(f"{store.location}: no run history in {manifest.RUNS_DIR}/ to "
                          "rebuild the manifest from")
    try:
        current, _ = manifest.read_state(store)
    except manifest.CorruptManifest:  # kept for a post-mortem, beside the history
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        store.rename(manifest.MANIFEST_NAME,
                     f"{manifest.RUNS_DIR}/corrupt-manifest-{stamp}.parquet.bak")
    else:
        if current.num_rows or store.read(manifest.MANIFEST_NAME) is not None:
            raise ConfigError(f"{store.location}/{manifest.MANIFEST_NAME}: the manifest reads "
                              "fine; nothing to recover")
    meta = {manifest.META_RUN: last}
    newest = _newest_config(store)
    if newest is not None:
        meta[manifest.META_CONFIG] = newest
    manifest.write_parts(store, manifest.MANIFEST_NAME, [rows], manifest.encode_meta(meta))
    return rows.num_rows, last


def _newest_config(store: Store) -> str | None:
    """The configuration snapshot written last (by the last run that changed it)."""
    snapshots = sorted(store.files_under([snapshot.CONFIG_DIR]),
                       key=lambda p: store.fs.modified(store.path(p)))
    return snapshots[-1] if snapshots else None


def _manifest_folder(out: str | Path) -> Path:
    out_path = Path(out)
    if not (out_path / manifest.MANIFEST_NAME).is_file():
        raise ConfigError(f"{out_path}: no {manifest.MANIFEST_NAME}: not a fanout output folder")
    return out_path


def _streamed(store: Store, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """manifest.iter_tables; a manifest that cannot be read says how to recover it."""
    manifest.read_meta(store)  # the footer: a truncated file stops here, with the way out
    try:
        yield from manifest.iter_tables(store, columns=columns)
    except (pa.ArrowException, OSError, ValueError):
        manifest.read_state(store)  # raises CorruptManifest
        raise


def _published_rows(out: str | Path, channels: Iterable[str],
                    columns: list[str] | None = None) -> tuple[Path, list[Row]]:
    """OUT's served rows of these channels, read a batch at a time so that the rest never
    becomes Python rows; `columns`: only those columns (the rest of each row None: a full Row
    is about 4 KB)."""
    out_path = _manifest_folder(out)
    store = Store(out_path)
    if columns is not None:  # and those the filter reads
        columns = list(dict.fromkeys([*columns, "channel", "status", "path"]))
    parts = [table.filter(_served(table, channels)) for table in _streamed(store, columns)]
    return out_path, manifest.from_table(pa.concat_tables(parts)) if parts else []


def _served(table: pa.Table, channels: Iterable[str]) -> pa.ChunkedArray:
    """The rows of these channels whose file is served."""
    wanted = pa.array(sorted(set(channels)), pa.string())
    return pc.and_(manifest.published_mask(table), pc.fill_null(
        pc.is_in(table.column("channel"), value_set=wanted), False))


def feed(out: str | Path, kind: str, base_url: str, channel: str = "web",
         output: str | None = None, *, video_channel: str | None = None,
         video_output: str | None = None, apparel: bool = False) -> tuple[str, Feed]:
    """A Google (TSV) or Meta (CSV) feed of OUT's product images; (text, feed with problems).
    Meta: one video per product (video_channel/video_output choose; default the Instagram
    feed video, else the first MP4). Google: `apparel` raises the minimum image size."""
    from .publish.feeds import (
        FEED_COLUMNS,
        FEED_FORMATS,
        VIDEO_FORMATS,
        best_output,
        google_tsv,
        meta_csv,
        product_feed,
        product_image_mask,
    )

    store = Store(_manifest_folder(out))
    formats = FEED_FORMATS[kind]
    # One pass over a few columns: which products the channel has images of and, unless
    # `output` says, which output has the largest images. Then only that output's rows (and
    # the videos a Meta feed may take) become Python rows, with the columns a feed reads.
    products: set[str | None] = set()
    sizes: list[tuple[str, str, int]] = []
    for table in _streamed(store, ["channel", "status", "path", "role", "product", "output",
                                   "format", "width", "height"]):
        mine = table.filter(product_image_mask(table, channel))
        products.update(pc.unique(mine.column("product")).to_pylist())
        if output is None and mine.num_rows:
            pixels = pc.multiply(pc.cast(mine.column("width"), pa.int64()),
                                 pc.cast(mine.column("height"), pa.int64()))
            facts = pa.table({"output": mine.column("output"), "format": mine.column("format"),
                              "pixels": pixels}).group_by(["output", "format"]).aggregate(
                [("pixels", "max")])
            sizes += zip(facts.column("output").to_pylist(), facts.column("format").to_pylist(),
                         facts.column("pixels_max").to_pylist(), strict=True)
    output = output or best_output(sizes, formats)
    videos = (pa.array(VIDEO_FORMATS, pa.string()) if kind == "meta" else None)
    parts = []
    for table in _streamed(store, FEED_COLUMNS):
        keep = pc.and_(product_image_mask(table, channel),
                       pc.fill_null(pc.equal(table.column("output"), output or ""), False))
        if videos is not None:
            keep = pc.or_(keep, pc.and_(manifest.published_mask(table), pc.fill_null(
                pc.is_in(table.column("format"), value_set=videos), False)))
        parts.append(table.filter(keep))
    rows = manifest.from_table(pa.concat_tables(parts)) if parts else []
    the_feed = product_feed(rows, channel, base_url, kind, output, video_channel=video_channel,
                            video_output=video_output, apparel=apparel, products=products)
    return (google_tsv if kind == "google" else meta_csv)(the_feed), the_feed


def amazon_export(out: str | Path, target: str | Path, channel: str = "amazon") -> list[str]:
    """OUT's Amazon files, named SKU.MAIN / SKU.PT01.., plus listing.csv, as a folder or .zip."""
    from .publish.feeds import AMAZON_COLUMNS, amazon_package

    out_path, rows = _published_rows(out, [channel], columns=AMAZON_COLUMNS)
    return amazon_package(rows, out_path, Path(target), channel)


_FLAT_COLUMNS = ("tags", "breakpoints", "extra")  # lists and a map: flattened in CSV


def _flat(table: pa.Table) -> pa.Table:
    """CSV has no list or map: tags as "a|b|c", breakpoints as "320|640" (Arrow kernels, a
    batch at a time), extra as JSON (Python, only for the rows that have it)."""
    import json

    for name in ("tags", "breakpoints"):
        column = table.column(name)
        joined = pc.binary_join(pc.cast(column, pa.list_(pa.string())), "|")
        empty = pc.fill_null(pc.equal(pc.list_value_length(column), 0), False)
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pc.if_else(empty, pa.scalar(None, pa.string()), joined))
    extra = table.column("extra")
    texts: list[str | None] = [None] * len(extra)
    have = pc.indices_nonzero(pc.is_valid(extra))  # the rows' maps made Python in one call
    for i, pairs in zip(have.to_pylist(), pc.take(extra, have).to_pylist(), strict=True):
        texts[i] = json.dumps(dict(pairs), ensure_ascii=False, sort_keys=True) if pairs else None
    return table.set_column(table.schema.get_field_index("extra"), "extra",
                            pa.array(texts, pa.string()))


def export_manifest(out: str | Path, fmt: str, sink: BinaryIO | None = None) -> str | None:
    """The manifest as CSV or JSON (one object per row), written to `sink` a batch of rows at a
    time (30 million rows are never held); without a sink, returned as text."""
    import json

    import pyarrow.csv as pacsv

    if sink is None:
        buffer = io.BytesIO()
        export_manifest(out, fmt, buffer)
        return buffer.getvalue().decode()
    store = Store(_manifest_folder(out))
    flat_schema = pa.schema([pa.field(f.name, pa.string()) if f.name in _FLAT_COLUMNS else f
                             for f in manifest.SCHEMA])
    writer = None if fmt == "json" else pacsv.CSVWriter(sink, flat_schema)
    first = True
    if fmt == "json":
        sink.write(b"[")
    for table in _streamed(store):
        if fmt == "json":
            for row in manifest.from_table(table):
                sink.write(b"%s\n %s" % (b"" if first else b",",
                                         json.dumps(row.as_dict(), default=str).encode()))
                first = False
            continue
        writer.write_table(_flat(table).cast(flat_schema))
    if fmt == "json":
        sink.write(b"\n]\n" if not first else b"]\n")
    else:
        writer.close()
    return None


REPORT_MASTERS = 1000  # masters one page shows by default (each a thumbnail of its master)


def report(out: str | Path, catalog: str | Path | None = None, *,
           channels: Iterable[str] = (), statuses: Iterable[str] = (),
           master: str | None = None, limit: int | None = REPORT_MASTERS,
           on_info: Callable[[str], None] | None = None) -> Path:
    """Write OUT/report.html: the contact sheet of OUT's derivatives, and the editor's loop.
    `catalog` (the listing or folder OUT was rendered from; by default the one the last run
    recorded, when it is still there) lets the page start from the catalog's crops file and
    name the file it saves.

    The page shows the rows of the given channels and statuses (default: all) of the masters
    whose id matches `master` (a glob: SHOE-*), at most `limit` masters (None or 0: every one),
    those with a failed or kept derivative first; its header counts the whole manifest. The
    manifest is read twice, a batch of a few columns at a time, and only the shown masters'
    rows become Python rows: a million masters' manifest makes a page of the first thousand.
    """
    from .publish.editor import read_sidecar
    from .publish.report import render_report

    out_path = _manifest_folder(out)
    store = Store(out_path)
    limit = limit if limit is None or limit > 0 else None  # 0, as on the command line: all
    totals, rows, note = _report_rows(store, set(channels), set(statuses), master, limit)
    if note and on_info is not None:
        on_info(note)
    if catalog is None:
        recorded = manifest.meta_value(manifest.read_meta(store), manifest.META_CATALOG)
        if recorded and (is_url(recorded) or Path(recorded).exists()):
            catalog = recorded
    sidecar = read_sidecar(catalog, exclude=out_path)
    try:
        presets = _config_for(store, None, False, lambda message: None).presets
    except ConfigError:  # a missing snapshot: the rows' own sizes are enough to draw them
        presets = {}
    target = out_path / "report.html"
    write_atomic(target, render_report(rows, f"fanout report: {out_path.name}", sidecar,
                                       presets, totals, note).encode())
    return target


def _report_rows(store: Store, channels: set[str], statuses: set[str], master: str | None,
                 limit: int | None) -> tuple[Totals, list[Row], str | None]:
    """(the whole manifest's totals, the rows the report shows, a note when it shows a part)."""
    from .publish.report import Totals

    totals = Totals()
    ids: set[str] = set()  # every master (the header's count)
    matching: set[str] = set()  # masters with a row the filters keep
    runs: set[str] = set()
    chans: set[str] = set()
    # the first `limit` matching masters with a failed or kept row, and without, in order
    troubled: dict[str, None] = {}
    others: dict[str, None] = {}
    cap = float("inf") if limit is None else limit

    def wanted(table: pa.Table) -> pa.ChunkedArray:
        mask = pc.is_valid(table.column("master_id"))
        if channels:  # a master-level failure (no channel) concerns every channel
            mask = pc.and_(mask, pc.or_(pc.is_null(table.column("channel")), pc.is_in(
                table.column("channel"), value_set=pa.array(sorted(channels), pa.string()))))
        if statuses:
            mask = pc.and_(mask, pc.is_in(table.column("status"),
                                          value_set=pa.array(sorted(statuses), pa.string())))
        if master:
            mask = pc.and_(mask, pc.match_substring_regex(table.column("master_id"),
                                                          _glob_regex(master)))
        return pc.fill_null(mask, False)

    for table in _streamed(store, ["master_id", "channel", "status", "run_id"]):
        totals.rows += table.num_rows
        counts = pc.value_counts(table.column("status"))
        totals.statuses.update(dict(zip(counts.field("values").to_pylist(),
                                        counts.field("counts").to_pylist(), strict=True)))
        for column, into in (("master_id", ids), ("run_id", runs), ("channel", chans)):
            into.update(pc.unique(table.column(column)).drop_null().to_pylist())
        chosen = table.filter(wanted(table))
        matching.update(pc.unique(chosen.column("master_id")).to_pylist())
        bad = pc.fill_null(pc.is_in(chosen.column("status"),
                                    value_set=pa.array([Status.FAILED.value, Status.KEPT.value])),
                           False)
        for mask, into in ((bad, troubled), (pc.invert(bad), others)):
            for m in pc.unique(chosen.filter(mask).column("master_id")).to_pylist():
                if len(into) >= cap:
                    break
                into.setdefault(m)
    totals.masters = len(ids)
    totals.runs, totals.channels = sorted(runs), sorted(chans)
    shown = [*troubled, *(m for m in others if m not in troubled)]
    shown = shown if limit is None else shown[:limit]
    rows: list[Row] = []
    if shown:
        keep = pa.array(sorted(shown), pa.string())
        parts = [t.filter(pc.and_(wanted(t), pc.fill_null(
            pc.is_in(t.column("master_id"), value_set=keep), False))) for t in _streamed(store)]
        rows = manifest.from_table(pa.concat_tables(parts))
    filters = "; ".join(f for f in (
        f"channel {', '.join(sorted(channels))}" if channels else "",
        f"status {', '.join(sorted(statuses))}" if statuses else "",
        f"master {master}" if master else "") if f)
    if not filters and len(rows) == totals.rows:
        return totals, rows, None
    note = (f"showing {len(rows)} of {totals.rows} derivatives, {len(shown)} of "
            f"{len(matching)} masters" + (f" matching {filters}" if filters else ""))
    if len(shown) < len(matching):
        note += (f": the first {limit}, those with a failure first (narrow it with --channel, "
                 "--status or --master, or raise --limit)")
    return totals, rows, note


def _glob_regex(pattern: str) -> str:
    """A glob (* any run, ? one character) as an anchored RE2 regex for Arrow."""
    import re

    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return f"^{body}$"


def gallery(out: str | Path, base_url: str, fmt: str = "json", channel: str = "web",
            video_channel: str = "mobile", sink: TextIO | None = None) -> str | None:
    """OUT's product galleries for a storefront, as JSON or an HTML page (publish/gallery.py),
    written to `sink` a product at a time (returned as text without one). `base_url`: where
    OUT is published (http(s)), or "." for a page inside OUT.

    Two passes over the manifest: a few columns say where each product's rows start and end;
    then the gallery's columns, a batch of rows at a time, and each product is written once
    its last row is read: a million masters' gallery never holds more than a batch and the
    products still open (was: every web and video row as a Python row, and the whole page)."""
    from .publish.feeds import check_base_url
    from .publish.gallery import (
        GALLERY_COLUMNS,
        Gather,
        html_chunks,
        json_chunks,
        stream_products,
    )
    from .schedule import cores

    if sink is None:
        buffer = io.StringIO()
        gallery(out, base_url, fmt, channel, video_channel, buffer)
        return buffer.getvalue()
    out_path = _manifest_folder(out)
    store = Store(out_path)
    base = "." if base_url == "." else check_base_url(base_url)
    channels = [channel, video_channel]
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    offset = 0
    for table in _streamed(store, ["channel", "status", "path", "role", "product"]):
        mask = pc.and_(pc.and_(_served(table, channels), pc.is_valid(table.column("product"))),
                       pc.fill_null(pc.not_equal(table.column("role"), "editorial"), True))
        at = pc.indices_nonzero(mask)
        spans = pa.table({"product": pc.take(table.column("product"), at),
                          "at": pc.add(pc.cast(at, pa.int64()), offset)}).group_by(
            "product").aggregate([("at", "min"), ("at", "max")])
        for product, low, high in zip(*(spans.column(c).to_pylist()
                                        for c in ("product", "at_min", "at_max")), strict=True):
            first.setdefault(product, low)
            last[product] = high
        offset += table.num_rows
    order = sorted(first, key=first.__getitem__)
    columns = list(dict.fromkeys([*GALLERY_COLUMNS, "channel", "status", "path"]))

    def batches() -> Iterator[tuple[int, list[Row]]]:
        end = 0
        for table in _streamed(store, columns):
            end += table.num_rows
            yield end, manifest.from_table(table.filter(_served(table, channels)))

    gather = Gather(channel, video_channel)
    products = stream_products(batches(), order, last, gather, out_path, base, cores())
    editorial = lambda: gather.editorial_entries(base)  # noqa: E731 (after the last product)
    chunks = (html_chunks(products, editorial, f"Storefront: {out_path.name}") if fmt == "html"
              else json_chunks(products, editorial))
    for chunk in chunks:
        sink.write(chunk)
    return None


def storefront(out: str | Path) -> Path:
    """Write OUT/storefront.html: the gallery's HTML form with relative URLs (works offline)."""
    out_path = Path(out)
    target = out_path / "storefront.html"
    stream_atomic(target, text_writer(lambda sink: gallery(out_path, ".", "html", sink=sink)))
    return target

