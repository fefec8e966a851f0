"""A run against the ones before it: what stays, what goes, what the removal guard allows, how a
run commits, how an interrupted one is finished or undone, and what changed between two runs.

The manifest (OUT/manifest.parquet) is the single commit point. A run writes, in this order:
a journal of the paths it may create and the files it will remove (before any of them), the
outputs, its history as `<run>.pending.parquet`, and then the manifest, whose metadata names
the run. Only then is the history renamed to `<run>.parquet`, the files that left the catalog
or their channel deleted, and the journal dropped. The next run reads the manifest's run id:
the interrupted run committed (finish its removals, keep its history) or it did not (delete
the files it created that no manifest row records, and its pending history).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from . import manifest, quiet
from .errors import ConfigError, RemovalRefused
from .manifest import Row, Status
from .masters import TOKEN_COLUMNS, is_racy
from .plan import MasterPlan
from .rows import TableRows
from .store import Protected, Store

# The removal guard's default: a nightly catalog change removes a few percent of a store's
# files at most (products retired), while an export that timed out or an emptied listing
# removes most of them. 10% tells the two apart. In a small store one retired product is
# more than 10% of the files, so up to 10 files may also go as long as they are under a
# quarter of what is published: a listing cut in half is refused at any size.
DEFAULT_MAX_REMOVAL_SHARE = 0.10
SMALL_STORE_FILES = 10
SMALL_STORE_SHARE = 0.25


def of_channels(table: pa.Table, channels: set[str]) -> pa.ChunkedArray:
    """True for the rows of `table` that belong to one of `channels`."""
    return pc.fill_null(pc.is_in(table.column("channel"),
                                 value_set=pa.array(sorted(channels), pa.string())), False)


def previous_index(previous: pa.Table, channels: set[str],
                   masters: list[str] | None = None) -> Callable[[MasterPlan], None]:
    """Attaches to a master, when it is submitted, the rows a previous run recorded for it
    (`masters`: the ids that will be submitted; default all)."""
    chosen = of_channels(previous, channels)
    if masters is not None:
        chosen = pc.and_(chosen, pc.is_in(previous.column("master_id"),
                                          value_set=pa.array(masters, pa.string())))
    mine = previous.filter(chosen).combine_chunks()  # one chunk: each take below is cheap
    groups = (mine.append_column("_row", pa.array(range(mine.num_rows), pa.int64()))
              .group_by("master_id").aggregate([("_row", "list")]))
    where = {m: i for i, m in enumerate(groups.column("master_id").to_pylist())}
    lists = groups.column("_row_list")

    def prepare(mp: MasterPlan) -> None:
        i = where.get(mp.master.id)
        if i is not None:
            rows = manifest.from_table(mine.take(lists[i].values))
            mp.previous = {(r.channel, r.output): r for r in rows}

    return prepare


# -- masters whose change token says they are the ones rendered last time ---------------------

# Columns of a previous row that tonight's catalog may restate (job._with_master does the same).
MASTER_COLUMNS = ("master_path", "master_kind", "product", "position", "role", "alt", "title",
                  "tags", "extra")
STANDING = quiet.STANDING


def outputs_stand(store: Store, rows: pa.Table) -> pa.Array:
    """True for rows whose file is on disk as recorded, by its size (hashing every served file
    on a no-change night would read all of OUT: `fanout render --verify` does), and for rows
    that stand for no file (`n/a`)."""
    paths = rows.column("path").to_pylist()
    sizes = rows.column("bytes").to_pylist()
    found = iter(store.sizes([p for p in paths if p is not None]))
    return pa.array([p is None or (next(found) == s and s is not None)
                     for p, s in zip(paths, sizes, strict=True)], pa.bool_())


def unchanged_masters(previous: pa.Table, meta: dict[bytes, bytes], plans: list[MasterPlan],
                      channels: set[str], store: Store,
                      run_id: str) -> tuple[set[int], pa.Table, pa.Array]:
    """Masters that need no task tonight, and their rows: (their indices in `plans`, every
    row of theirs, stamped `skipped` by this run, and the ids of those whose rows differ from
    the previous ones in nothing but the run and the status: the history leaves them out).

    A master qualifies when its change token is the one the previous run recorded on each of
    its rows, is not racy (masters.is_racy against that run's start), and every derivative
    planned for it has a previous row of the same recipe and path that stands (ok, skipped or
    n/a, its file on disk as recorded). Anything else (a changed or unreadable master, a new
    or changed recipe, a missing file, a row another run left) goes to the job, which hashes
    the master and decides per derivative, as on a --verify night.
    """
    last = manifest.meta_value(meta, manifest.META_RUN)
    started = manifest.meta_value(meta, manifest.META_STARTED)
    since = int(started) if started else None
    wanted = {}
    for i, mp in enumerate(plans):
        m, token = mp.master, mp.master.token
        if (token is None or m.errors or m.kind is None or is_racy(token, since)
                or any(d.error is not None for d in mp.derivatives)):
            continue
        wanted[m.id] = i
    if last is None or not wanted or not previous.num_rows:
        return set(), previous.schema.empty_table(), pa.array([], pa.string())
    planned = pa.array([
        _join(mp.master.id, d.channel, d.output, d.recipe_hash, d.path or "", tail)
        for mp, tail in ((plans[i], _join(plans[i].master.path, *(
            "" if v is None else str(v) for v in plans[i].master.token or ())))
            for i in wanted.values())
        for d in mp.derivatives
    ], pa.string())
    mine = previous.filter(pc.and_(
        pc.and_(of_channels(previous, channels), pc.equal(previous.column("run_id"), last)),
        pc.fill_null(pc.is_in(previous.column("status"),
                              value_set=pa.array(STANDING, pa.string())), False)))
    mine = mine.filter(pc.fill_null(pc.is_in(_row_fingerprints(mine), value_set=planned), False))
    mine = mine.filter(outputs_stand(store, mine))
    counts = mine.column("master_id").value_counts()
    ids = [m for m, n in zip(counts.field("values").to_pylist(),
                             counts.field("counts").to_pylist(), strict=True)
           if n == len(plans[wanted[m]].derivatives)]
    skipped = pa.array(ids, pa.string())
    rows = mine.filter(pc.is_in(mine.column("master_id"), value_set=skipped))
    restamped, restated = _restamped(rows, [plans[wanted[m]] for m in ids], run_id)
    quiet = pc.filter(skipped, pc.invert(pc.is_in(skipped, value_set=restated)))
    return {wanted[m] for m in ids}, restamped, quiet


def _row_fingerprints(rows: pa.Table) -> pa.ChunkedArray:
    """master, channel, output, recipe, path, master path and token of each row, as one string
    (null parts as empty ones), to match planned derivatives against."""
    parts = [rows.column(c) for c in ("master_id", "channel", "output", "recipe_hash", "path",
                                      "master_path")]
    parts += [pc.cast(rows.column(c), pa.string()) for c in TOKEN_COLUMNS]
    return pc.binary_join_element_wise(*parts, "\x1f", null_handling="replace",
                                       null_replacement="")


def _restamped(rows: pa.Table, plans: list[MasterPlan],
               run_id: str) -> tuple[pa.Table, pa.Array]:
    """Previous rows as this run's `skipped` rows (n/a rows stay n/a, with their reason), with
    tonight's master columns (a listing may have changed a title or tags) and plan digest; and
    the ids of the masters whose columns did change."""
    masters = [mp.master for mp in plans]
    where = pc.index_in(rows.column("master_id"),
                        value_set=pa.array([m.id for m in masters], pa.string()))
    tonight = {
        "master_path": [m.path for m in masters], "master_kind": [m.kind for m in masters],
        "product": [m.product for m in masters], "position": [m.position for m in masters],
        "role": [m.role for m in masters], "alt": [m.alt for m in masters],
        "title": [m.title for m in masters],
        "tags": [list(m.tags) or None for m in masters],
        "extra": [m.extra or None for m in masters],
    }
    values = {
        **{name: pa.array(tonight[name], rows.schema.field(name).type).take(where)
           for name in MASTER_COLUMNS},
        **quiet.skipped_columns(rows, run_id),
        "plan_digest": pa.array([quiet.master_digest(m) for m in masters],
                                pa.string()).take(where),
    }
    differs = pa.array([False] * rows.num_rows, pa.bool_())
    for name in MASTER_COLUMNS:
        differs = pc.or_(differs, _differs(rows.column(name), values[name]))
    restated = pc.unique(rows.column("master_id").filter(differs).combine_chunks())
    for name, column in values.items():
        rows = rows.set_column(rows.schema.get_field_index(name), name, column)
    return rows, restated


def _differs(old: pa.ChunkedArray, new: pa.Array) -> pa.Array:
    """Row by row, whether two columns hold different values (two nulls are the same)."""
    old = old.combine_chunks()
    if pa.types.is_nested(old.type):  # lists and maps: compared in Python where either is set
        either = pc.or_(pc.is_valid(old), pc.is_valid(new))
        out = [False] * len(old)
        for i in pc.indices_nonzero(either).to_pylist():
            out[i] = old[i].as_py() != new[i].as_py()
        return pa.array(out, pa.bool_())
    same = pc.fill_null(pc.equal(old, new), False)
    both_null = pc.and_(pc.is_null(old), pc.is_null(new))
    return pc.invert(pc.or_(same, both_null))


# -- the removal guard ------------------------------------------------------------------------

@dataclass
class Removals:
    paths: list[str]  # published files the run would delete
    published: int  # published files of the channels the run renders


def predict_removals(previous: pa.Table, plans: list[MasterPlan], channels: set[str],
                     keep_stale: bool, also_published: int = 0) -> Removals:
    """What a run would delete, known before it renders: published files of the rendered
    channels that no planned derivative claims. A master that is in the catalog tonight but
    cannot be read or listed properly keeps its files (they stay as `kept`), so its rows are
    not counted; with --keep-stale only files whose name changed go. `also_published`: the
    published files of masters `previous` leaves out (quiet ones), which count in the whole."""
    mine = previous.filter(pc.and_(of_channels(previous, channels),
                                   manifest.published_mask(previous)))
    planned_paths = pa.array([d.path for mp in plans for d in mp.derivatives if d.path],
                             pa.string())
    failing = pa.array([mp.master.id for mp in plans
                        if mp.master.errors or mp.master.kind is None], pa.string())
    gone = pc.invert(pc.fill_null(pc.is_in(mine.column("path"), value_set=planned_paths), False))
    gone = pc.and_(gone, pc.invert(pc.is_in(mine.column("master_id"), value_set=failing)))
    if keep_stale:
        planned_keys = pa.array([_join(mp.master.id, d.channel, d.output)
                                 for mp in plans for d in mp.derivatives], pa.string())
        still_planned = pc.fill_null(pc.is_in(manifest.row_keys(mine), value_set=planned_keys),
                                     False)
        gone = pc.and_(gone, still_planned)
    paths = sorted(set(mine.filter(gone).column("path").to_pylist()))
    return Removals(paths, len(set(mine.column("path").to_pylist())) + also_published)


def _join(*parts: str) -> str:
    return "\x1f".join(parts)


def removal_limit(spec: str | int | None, published: int) -> int:
    """How many published files a run may remove: `spec` is a count ("50"), a share ("10%")
    or None for the default."""
    if spec is None:
        return max(int(published * DEFAULT_MAX_REMOVAL_SHARE),
                   min(SMALL_STORE_FILES, int(published * SMALL_STORE_SHARE)))
    text = str(spec).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
    if match and float(match[1]) <= 100:
        return int(published * float(match[1]) / 100)
    if text.isdigit():
        return int(text)
    raise ConfigError(f"--max-removals: expected a number of files like 50 or a share like "
                      f"10%; found {text!r}")


def guard(removals: Removals, allow: bool, spec: str | int | None, out: str) -> None:
    """Refuse (RemovalRefused, nothing changed) a run that would remove more published files
    than allowed, or every one of them, unless the user says so."""
    count = len(removals.paths)
    if allow or not count:
        return
    limit = removal_limit(spec, removals.published)
    everything = count == removals.published and spec is None
    if count <= limit and not everything:
        return
    share = f"{100 * count / removals.published:.0f}%" if removals.published else "all"
    why = ("every published file of the channels it renders" if everything
           else f"over the limit of {limit} (--max-removals)")
    raise RemovalRefused(
        f"{out}: this run would remove {count} published file(s), {share} of "
        f"{removals.published}: {why}. Nothing was changed. If the catalog really lost these "
        "masters or outputs, rerun with --allow-removals (or --max-removals N); if the "
        "listing came back empty or cut short, fix it first.",
        removals.paths, removals.published)


# -- settling a run ---------------------------------------------------------------------------

@dataclass
class Settled:
    carried: pa.Table  # rows of channels this run did not render
    stale: pa.Table  # rows of rendered channels that this run did not produce
    kept: pa.Table  # stale rows of masters that failed tonight: their files stay (`kept`)
    orphans: list[str]  # files no row claims any more


def settle(previous: pa.Table, new: pa.Table, channels: set[str], keep_stale: bool,
           failing: dict[str, str], run_id: str, store: Store) -> Settled:
    """Sort the previous manifest against this run's rows (`new`: keys, paths, statuses).

    Rows of channels this run did not render are carried unchanged. A previous row of a rendered
    channel that this run did not produce is stale: its master left the catalog or its output
    left the channel (dropped with its file, or carried with --keep-stale), unless its master
    is in the catalog and failed tonight (`failing`: id -> error), whose files stay `kept`.
    A row without a channel is a master-level failure: every run states it afresh.
    """
    chosen = of_channels(previous, channels)
    carried = previous.filter(pc.and_(pc.is_valid(previous.column("channel")), pc.invert(chosen)))
    mine = previous.filter(chosen)
    stale = mine.filter(pc.invert(pc.fill_null(
        pc.is_in(manifest.row_keys(mine), value_set=manifest.row_keys(new).combine_chunks()),
        False)))
    held = pc.and_(pc.is_in(stale.column("master_id"),
                            value_set=pa.array(sorted(failing), pa.string())),
                   manifest.published_mask(stale))
    kept = _as_kept(stale.filter(held), failing, run_id, store)
    stale = stale.filter(pc.invert(held))
    claimed = pa.concat_arrays([
        manifest.claimed_paths(t).combine_chunks()
        for t in (carried, kept, *([stale] if keep_stale else []), new)
    ])
    paths = pc.unique(previous.column("path").drop_null().combine_chunks())
    orphans = paths.filter(pc.invert(pc.is_in(paths, value_set=claimed))).to_pylist()
    return Settled(carried, stale, kept, sorted(orphans))


def as_kept(prev: Row, run_id: str, error: str) -> Row:
    """An earlier published row, carried as `kept` by a run in which its derivative failed."""
    since = prev.stale_since if prev.status == Status.KEPT else None
    return prev.replace(run_id=run_id, status=Status.KEPT.value, error=error,
                        stale_since=since or run_id, render_ms=0.0, decode_ms=None)


def still_served(prev: Row, store: Store) -> bool:
    """An earlier row's file is published and still on disk as recorded (by size: hashing
    every served file on a night the masters' mount is gone would read all of OUT)."""
    return prev.published and store.size(prev.path or "") == prev.bytes


def _as_kept(rows: pa.Table, failing: dict[str, str], run_id: str, store: Store) -> pa.Table:
    """Earlier rows of masters that failed tonight, as `kept` rows (their files stay; one gone
    or altered on disk has nothing left to serve)."""
    return manifest.to_table([as_kept(row, run_id, failing[row.master_id])
                              for row in manifest.from_table(rows)
                              if still_served(row, store)])


def with_status(rows: pa.Table, run_id: str, status: Status) -> pa.Table:
    """`rows` re-stamped with this run's id and `status` (stale rows recorded as removed)."""
    for name, value in (("run_id", run_id), ("status", status.value)):
        rows = rows.set_column(rows.schema.get_field_index(name), name,
                               pa.array([value] * rows.num_rows, pa.string()))
    return rows


def failing_masters(rows: list[Row], into: dict[str, str]) -> None:
    """Note a master none of whose derivatives stands tonight, with its first error."""
    if rows and not any(r.status in (Status.OK, Status.SKIPPED, Status.NOT_APPLICABLE)
                        for r in rows):
        error = next((r.error for r in rows if r.error), None)
        into[rows[0].master_id] = error or "not rendered"


# -- interrupted runs -------------------------------------------------------------------------

def interrupted_paths(store: Store) -> set[str]:
    """Every path the journals of interrupted runs name (finish_interrupted looks them up)."""
    out: set[str] = set()
    for path in store.files_under([manifest.RUNS_DIR]):
        if path.endswith(manifest.JOURNAL_SUFFIX):
            for paths in manifest.read_journal(store, path).values():
                out.update(paths)
    return out


def finish_interrupted(store: Store, committed: str | None, recorded: set[str],
                       protect: Protected | Iterable[str]) -> int:
    """Finish or undo a run that was killed (journal and pending history left in _runs/).
    `recorded`: which of the journals' paths (interrupted_paths) a manifest row claims.

    If the manifest names the run, it committed: its history is kept and the files it meant to
    remove are removed. If not, the files it may have created that no manifest row records are
    deleted, with its pending history. Returns how many files were deleted.
    """
    deleted = 0
    for path in sorted(store.files_under([manifest.RUNS_DIR])):
        name = posixpath.basename(path)
        if name.endswith(manifest.JOURNAL_SUFFIX):
            run = name.removesuffix(manifest.JOURNAL_SUFFIX)
            journal = manifest.read_journal(store, path)
            undo = journal["remove"] if run == committed else journal["write"]
            deleted += store.remove([p for p in undo if p not in recorded], protect)
            store.remove([path])
        elif name.endswith(manifest.PENDING_SUFFIX):
            run = name.removesuffix(manifest.PENDING_SUFFIX)
            if run == committed:
                store.rename(path, manifest.history_path(run))
            else:
                store.remove([path])
    return deleted


# -- what changed between two runs -----------------------------------------------------------

# What `diff` keeps of a run's rows: the columns it shows (the rest of a row is None), so
# that a night that re-rendered millions of rows is listed from a few columns of them.
DIFF_COLUMNS = ["run_id", "master_id", "channel", "output", "path", "status", "error",
                "stale_since"]
DIFF_STATUSES = [Status.OK.value, Status.FAILED.value, Status.KEPT.value]


@dataclass
class RunDiff:
    older: str | None
    newer: str
    # Rows as Arrow tables, made Row objects as they are read (TableRows): a first night of
    # 30 million added rows is listed without holding 30 million Python rows.
    added: Sequence[Row]
    rerendered: Sequence[Row]
    removed: Sequence[Row]
    failed: Sequence[Row]  # failed and kept rows (a kept row failed, and serves its last good file)
    unchanged: int


def diff(out: str, older: str | None = None, newer: str | None = None) -> RunDiff:
    """Compare two runs' history (default: the latest against the one before it).

    What a run did: ok (rendered), skipped, failed, kept, and the stale rows it removed
    (status `removed`). Its own history file holds every row it rendered, failed, kept or
    removed, read a batch of DIFF_COLUMNS at a time; the rows it recorded unchanged are a
    count in that file's metadata (manifest.META_UNCHANGED). A rendered derivative whose file
    was not served after the older run (by any run: one that rendered other channels leaves
    these as they were) is `added`, else `rerendered`: only the rendered rows' keys are looked
    up in the history up to the older run, so neither run's whole manifest is rebuilt.
    """
    store = Store(out)
    ids = manifest.runs(store)
    if not ids:
        raise ConfigError(f"{out}: no runs recorded (no {manifest.RUNS_DIR}/ folder)")
    for name, value in (("--to", newer), ("--from", older)):
        if value is not None and value not in ids:
            raise ConfigError(f"{name}: no run {value!r} in {out}; runs: {', '.join(ids)}")
    newer = newer or ids[-1]
    if older is None and ids.index(newer) > 0:
        older = ids[ids.index(newer) - 1]

    if older is not None and ids.index(older) >= ids.index(newer):
        raise ConfigError(f"--from {older} is not earlier than --to {newer}")
    removed, mine, skipped = [], [], 0
    with _readable(store, newer):
        meta = manifest.read_footer(store, manifest.history_path(newer))
        for batch in manifest.iter_tables(store, relative=manifest.history_path(newer),
                                          columns=DIFF_COLUMNS):
            status = batch.column("status")
            ours = pc.fill_null(pc.equal(batch.column("run_id"), newer), False)
            removed.append(batch.filter(pc.fill_null(pc.equal(status, Status.REMOVED.value),
                                                     False)))
            mine.append(batch.filter(pc.and_(ours, pc.fill_null(pc.is_in(
                status, value_set=pa.array(DIFF_STATUSES)), False))))
            skipped += _skipped(batch, newer)
    empty = pa.schema([manifest.SCHEMA.field(c) for c in DIFF_COLUMNS]).empty_table()
    table = pa.concat_tables([empty, *mine])
    rendered = table.filter(pc.equal(table.column("status"), Status.OK.value))
    earlier = (_published_keys(store, ids[:ids.index(older) + 1], manifest.row_keys(rendered))
               if older and rendered.num_rows else pa.array([], pa.string()))
    was = pc.fill_null(pc.is_in(manifest.row_keys(rendered), value_set=earlier), False)
    return RunDiff(
        older=older, newer=newer,
        added=TableRows(rendered.filter(pc.invert(was))),
        rerendered=TableRows(rendered.filter(was)),
        removed=TableRows(pa.concat_tables([empty, *removed])),
        # in the order the run wrote them: its own rows, then the ones it kept
        failed=TableRows(pa.concat_tables([
            table.filter(pc.equal(table.column("status"), s)) for s in (Status.FAILED.value,
                                                                     Status.KEPT.value)])),
        unchanged=_unchanged(store, newer, meta, skipped),
    )


def _published_keys(store: Store, runs: list[str], keys: pa.ChunkedArray) -> pa.Array:
    """Of `keys` (manifest.row_keys), those whose file was served after the last of `runs`.
    Each key's latest history row up to then decides (a delta history leaves out a row it
    recorded unchanged, which keeps whether it is served): the history files are read newest
    first, a few columns a batch at a time, until every key is found."""
    open_keys = pc.unique(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys)
    served: list[pa.Array] = []
    columns = ["master_id", "channel", "output", "status", "path"]
    for run in reversed(runs):
        found = []
        with _readable(store, run):
            # about a million rows per lookup: is_in builds its table of the open keys each
            # time (30 million open keys after a night that re-rendered everything)
            for batch in _regrouped(manifest.iter_tables(
                    store, relative=manifest.history_path(run), columns=columns), 1 << 20):
                mine = batch.filter(pc.fill_null(pc.is_in(manifest.row_keys(batch),
                                                          value_set=open_keys), False))
                if mine.num_rows:
                    found.append(mine)
        if not found:
            continue
        rows = pa.concat_tables(found)
        row_keys = manifest.row_keys(rows)
        served.append(row_keys.filter(manifest.published_mask(rows)).combine_chunks())
        open_keys = open_keys.filter(pc.invert(pc.is_in(open_keys, value_set=row_keys)))
        if not len(open_keys):
            break
    return pa.concat_arrays(served) if served else pa.array([], pa.string())


def _regrouped(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Tables of at least `rows` rows (the last may have fewer), from smaller ones in order."""
    held: list[pa.Table] = []
    count = 0
    for table in tables:
        held.append(table)
        count += table.num_rows
        if count >= rows:
            yield pa.concat_tables(held)
            held, count = [], 0
    if held:
        yield pa.concat_tables(held)


def _skipped(table: pa.Table, run: str) -> int:
    """How many of `table`'s rows `run` recorded `skipped`."""
    return pc.sum(pc.fill_null(pc.and_(pc.equal(table.column("run_id"), run), pc.equal(
        table.column("status"), Status.SKIPPED.value)), False)).as_py() or 0


@contextmanager
def _readable(store: Store, run: str) -> Iterator[None]:
    """A run's history file that cannot be read stops `diff` with its name and the reason."""
    try:
        yield
    except (pa.ArrowException, OSError, ValueError) as exc:
        where = store.path(manifest.history_path(run))
        raise ConfigError(f"{where}: cannot read this run's history "
                          f"({str(exc).splitlines()[0]})") from None


def _unchanged(store: Store, run: str, meta: dict[bytes, bytes], in_file: int) -> int:
    """How many rows `run` recorded `skipped`: its history's count; for a history written
    before the count, its own skipped rows (`in_file`, a full history), the manifest it
    committed while it is the last, else the history replayed up to it."""
    recorded = manifest.meta_value(meta, manifest.META_UNCHANGED)
    if recorded is not None:
        return int(recorded)
    if manifest.meta_value(meta, manifest.META_HISTORY) != manifest.HISTORY_DELTA:
        return in_file
    try:
        last = manifest.meta_value(manifest.read_meta(store), manifest.META_RUN)
    except ConfigError:  # a corrupt manifest: the history alone still tells
        last = None
    if last == run:
        return sum(_skipped(t, run) for t in manifest.iter_tables(store,
                                                                  columns=["run_id", "status"]))
    state, _ = _replayed(store, until=run)
    return sum(r.run_id == run and r.status == Status.SKIPPED for r in state.values())


def run_rows(store: Store, run: str) -> list[Row]:
    """Every row a run wrote (not those it removed): its rows in the manifest it committed,
    rebuilt from the history up to it; from the manifest itself while that run is the last.
    Python rows of a whole run: for tests and small outputs (`diff` reads tables instead)."""
    try:
        last = manifest.meta_value(manifest.read_meta(store), manifest.META_RUN)
    except ConfigError:  # a corrupt manifest: the history alone still tells
        last = None
    if last == run:
        table = manifest.read_table(store)
        table = table.filter(pc.fill_null(pc.equal(table.column("run_id"), run), False))
        rows = manifest.from_table(table)
    else:
        state, _ = _replayed(store, until=run)
        rows = [r for r in state.values() if r.run_id == run]
    # In the order the run wrote them: its own rows, then the ones it kept.
    return sorted(rows, key=lambda r: r.status == Status.KEPT)


def replay(store: Store) -> tuple[pa.Table, str | None]:
    """The manifest rebuilt from the committed history, oldest run first; (rows, last run)."""
    state, last = _replayed(store)
    return manifest.to_table(list(state.values())), last


def _replayed(store: Store, until: str | None = None) -> tuple[dict[tuple, Row], str | None]:
    """The manifest's rows after each run up to `until` (default: all), by key; (rows, last run).

    A full history holds every row its run wrote for the channels it rendered and the rows it
    removed. A delta history (manifest.META_HISTORY) holds only what changed: every other row of
    the channels it rendered was recorded `skipped` (n/a rows stay n/a) by that run, unchanged.
    Rows without a channel (a master that could not be planned) last one run.
    """
    state: dict[tuple, Row] = {}
    last = None
    for run in manifest.runs(store):
        state = {k: v for k, v in state.items() if k[1] is not None}
        rows, meta = manifest.read_history(store, run)
        if manifest.meta_value(meta, manifest.META_HISTORY) == manifest.HISTORY_DELTA:
            touched = {r.key for r in rows}
            channels = set(json.loads(manifest.meta_value(meta, manifest.META_CHANNELS) or "[]"))
            for key, row in state.items():
                if key not in touched and row.channel in channels:
                    state[key] = _recorded_unchanged(row, run)
        for row in rows:
            if row.status == Status.REMOVED:
                state.pop(row.key, None)
            else:
                state[row.key] = row
        last = run
        if run == until:
            break
    return state, last


def _recorded_unchanged(row: Row, run: str) -> Row:
    """A row as a run that left it unchanged recorded it (the same as _restamped, row-wise)."""
    if row.status == Status.NOT_APPLICABLE:
        return row.replace(run_id=run, render_ms=0.0, decode_ms=None)
    if row.status in (Status.OK, Status.SKIPPED):
        return row.replace(run_id=run, status=Status.SKIPPED.value, error=None, render_ms=0.0,
                           decode_ms=None)
    return row  # kept and failed rows are restated by every run that renders their channel
