"""Quiet masters: the ones a night need not plan, submit or hold, told apart from the previous
manifest in streamed passes (issue #18).

At a million masters, planning every derivative (30 a master) and loading the whole previous
manifest took 15 GB of client memory before a single master was looked at. A quiet master is
known without either:

- its **plan digest** (master_digest: everything planning reads of a master: id, path, kind,
  product, position, role, alt, title, tags, framing, every other listing column, and its
  change token) is the one the previous run recorded on each of its rows in the channels this
  run renders, and its token is not racy against that run's start;
- each of those channels is configured as the previous run rendered it (its **fingerprint**:
  the channel, its outputs and rules, its presets' recipe hashes, which name the engines);
- every one of those rows stands (ok, skipped or n/a, written by the previous run, its file on
  disk at its recorded size), and there are as many as its plan has (counted once per shape:
  kind, role, position and tags decide which outputs a master gets).

A quiet master's rows are this run's `skipped` rows as they are: the manifest is streamed to its
new file and they are restamped on the way (`restamp`). The rest of the previous manifest, the
rows of masters that are not quiet, is what the run loads (`rest`). Everything the run decides
about its other masters (removals, claims, collisions, the job) is decided as before, on them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import manifest
from .catalog import Master
from .masters import is_racy
from .plan import expand_ladders, ladder_names
from .plan import plan as build_plan
from .rows import PUBLISHED, SCHEMA, Status
from .scratch import scratch
from .spec.models import Channel, Preset, recipe_hash
from .store import Store

# Bumped when planning itself changes (a new kind of derivative, another naming): every master
# is planned again once.
PLAN_VERSION = "1"
# Key-value metadata of manifest.parquet: {channel: fingerprint} of the channels the run rendered.
META_CHANNELS = b"fanout.channel_fingerprints"
STANDING = (Status.OK.value, Status.SKIPPED.value, Status.NOT_APPLICABLE.value)
BATCH_ROWS = 1 << 16


def master_digest(m: Master) -> str | None:
    """Everything planning reads of a master, and its change token, as one hash; None when the
    master can never be quiet (no token to trust, unreadable, content not recognised)."""
    if m.token is None or m.errors or m.kind is None:
        return None
    facts = (PLAN_VERSION, m.id, m.path, m.kind, m.product, m.position, m.role, m.alt, m.title,
             m.tags, m.focus, m.boxes, sorted(m.extra.items()), m.token)
    return hashlib.blake2b(repr(facts).encode(), digest_size=16).hexdigest()


def channel_fingerprints(channels: list[Channel], presets: dict[str, Preset],
                         engine_id: dict[str, str]) -> dict[str, str]:
    """channel -> a hash of everything it plans and checks with: its definition, and the recipe
    hash of each concrete preset its outputs use (the recipe and the engine that renders it)."""
    from .plan import _engine_for

    concrete = expand_ladders(presets)
    out = {}
    for c in channels:
        recipes = [[o.name, o.preset, [recipe_hash(concrete[n], _engine_for(concrete[n], engine_id))
                                       for _, n in ladder_names(o.preset, presets[o.preset])]]
                   for o in c.outputs]
        payload = json.dumps([PLAN_VERSION, c.model_dump(mode="json"), recipes], sort_keys=True)
        out[c.name] = hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()
    return out


def planned_counts(masters: list[Master], channels: list[Channel], presets: dict[str, Preset],
                   engine_id: dict[str, str]) -> list[int]:
    """How many derivatives each master's plan has in `channels`, planned once per shape."""
    counts: dict[tuple, int] = {}
    out = []
    for m in masters:
        shape = (m.kind, m.role, m.position, m.tags)
        if shape not in counts:
            probe = Master(id="probe", path="/probe", product="probe", position=m.position,
                           role=m.role, kind=m.kind, tags=m.tags)
            counts[shape] = len(build_plan([probe], channels, presets, engine_id)
                                .masters[0].derivatives)
        out.append(counts[shape])
    return out


# -- reading the previous manifest in batches -------------------------------------------------

DICTIONARY_COLUMNS = ["run_id", "master_id", "channel", "status", "plan_digest"]


def _batches(store: Store, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The manifest's rows, a batch at a time, with SCHEMA's columns (all or `columns`); the
    repeated strings read as dictionaries."""
    with _open(store) as parquet:
        present = [c for c in (columns or SCHEMA.names) if c in parquet.schema_arrow.names]
        for batch in manifest.batches(parquet, present, BATCH_ROWS):
            yield _conform(batch, columns)


@contextmanager
def _open(store: Store) -> Iterator[pq.ParquetFile]:
    """OUT's manifest, its repeated strings read as dictionaries."""
    with store.fs.open(store.path(manifest.MANIFEST_NAME), "rb") as fh:
        names = pq.read_schema(fh).names
        fh.seek(0)
        yield pq.ParquetFile(fh, read_dictionary=[c for c in DICTIONARY_COLUMNS if c in names])


def _conform(batch: pa.RecordBatch, columns: list[str] | None) -> pa.RecordBatch:
    """`columns` of SCHEMA (all by default), nulls where an older manifest lacks one; the
    dictionary-read ones stay dictionaries."""
    names = columns or SCHEMA.names
    arrays = [batch.column(name) if name in batch.schema.names
              else pa.nulls(batch.num_rows, SCHEMA.field(name).type) for name in names]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _plain(column: pa.Array) -> pa.Array:
    """A dictionary column as plain values (SCHEMA's type)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def _lookup(column: pa.Array, fn: Callable[[object], object], dtype: type,
            missing: object) -> np.ndarray:
    """fn(value) for each row of a column, computed once per distinct value (the column's
    dictionary): millions of rows, thousands of values. Null rows get `missing`."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    values = np.array([fn(v) for v in column.dictionary.to_pylist()] + [missing], dtype=dtype)
    codes = column.indices.fill_null(len(values) - 1).to_numpy(zero_copy_only=False)
    return values[codes]


def _is_in(column: pa.Array, wanted: set | dict) -> np.ndarray:
    return _lookup(column, wanted.__contains__, bool, False)


# -- the survey: which masters are quiet ----------------------------------------------------

@dataclass
class Survey:
    quiet: set[str] = field(default_factory=set)  # master ids
    quiet_published: int = 0  # published files of the quiet masters in the rendered channels
    # The previous manifest lists the catalog's masters in tonight's catalog order: the new one
    # can be written by merging it with tonight's rows; else it is sorted in memory.
    in_order: bool = True


def survey(store: Store, meta: dict[bytes, bytes], masters: list[Master],
           chosen: list[Channel], presets: dict[str, Preset], engine_id: dict[str, str],
           stands: Callable[[Store, pa.Table], pa.Array]) -> Survey:
    """Find the quiet masters (see the module's docstring) in one pass over the previous
    manifest's key columns. `stands(store, rows)`: which rows' files are on disk as recorded."""
    last = manifest.meta_value(meta, manifest.META_RUN)
    started = manifest.meta_value(meta, manifest.META_STARTED)
    since = int(started) if started else None
    recorded = json.loads(manifest.meta_value(meta, META_CHANNELS) or "{}")
    fingerprints = channel_fingerprints(chosen, presets, engine_id)
    if last is None or any(recorded.get(c) != fp for c, fp in fingerprints.items()):
        return Survey()
    counts = planned_counts(masters, chosen, presets, engine_id)
    expected: dict[str, tuple[str, int]] = {}  # digest -> (master id, rows its plan has)
    for m, n in zip(masters, counts, strict=True):
        digest = master_digest(m)
        if digest is not None and m.token is not None and not is_racy(m.token, since):
            expected[digest] = (m.id, n)
    selected = set(fingerprints)
    found: dict[str, list[int]] = {}  # digest -> [rows, rows that do not stand, published]
    dirty: set[str] = set()  # masters with a row in a rendered channel of another digest
    order = _Order(masters)
    for batch in _batches(store, ["master_id", "run_id", "channel", "status", "path", "bytes",
                                  "plan_digest"]):
        chosen_rows = _is_in(batch.column("channel"), selected)
        carried = np.asarray(pc.is_valid(batch.column("channel"))) & ~chosen_rows
        ours = chosen_rows & _is_in(batch.column("plan_digest"), expected)
        stray = chosen_rows & ~ours
        if stray.any():
            ids = batch.column("master_id").filter(pa.array(stray))
            dirty.update(_plain(ids).unique().to_pylist())
        if not ours.any():
            order.add(batch.column("master_id").filter(pa.array(carried)))
            continue
        good = ours & _is_in(batch.column("run_id"), {last}) & _is_in(
            batch.column("status"), set(STANDING))
        where = np.flatnonzero(good)
        if len(where):
            files = batch.select(["path", "bytes"]).take(pa.array(where))
            good[where] = stands(store, files).to_numpy(zero_copy_only=False)
        order.add(batch.column("master_id").filter(pa.array(carried | good)))
        published = ours & _is_in(batch.column("status"), set(PUBLISHED)) & np.asarray(
            pc.is_valid(batch.column("path")))
        digests = batch.column("plan_digest")
        if not pa.types.is_dictionary(digests.type):
            digests = pc.dictionary_encode(digests)
        codes = digests.indices.fill_null(0).to_numpy(zero_copy_only=False)
        size = len(digests.dictionary)
        rows = np.bincount(codes[ours], minlength=size)
        bad = np.bincount(codes[ours & ~good], minlength=size)
        pub = np.bincount(codes[published], minlength=size)
        names = digests.dictionary.to_pylist()
        for j in np.flatnonzero(rows):
            tally = found.setdefault(names[j], [0, 0, 0])
            tally[0] += int(rows[j])
            tally[1] += int(bad[j])
            tally[2] += int(pub[j])
    out = Survey(in_order=order.monotonic)
    for digest, (master_id, n) in expected.items():
        rows, bad, pub = found.get(digest, (0, 0, 0))
        if rows == n and not bad and master_id not in dirty:
            out.quiet.add(master_id)
            out.quiet_published += pub
    return out


class _Order:
    """Whether a stream of rows lists the catalog's masters in the catalog's order."""

    def __init__(self, masters: list[Master]) -> None:
        self.index = {m.id: i for i, m in enumerate(masters)}
        self.last = -1
        self.monotonic = True

    def add(self, ids: pa.Array) -> None:
        if not self.monotonic:
            return
        k = _lookup(ids, lambda v: self.index.get(v, -1), np.int64, -1)
        k = k[k >= 0]
        if len(k):
            self.monotonic = bool(k[0] >= self.last and np.all(np.diff(k) >= 0))
            self.last = int(k[-1])


# -- the rest: what the run loads -----------------------------------------------------------

@dataclass
class Rest:
    # Previous rows of the rendered channels whose master is not quiet, and rows without a
    # channel (a master-level failure), in SCHEMA: what the run settles against tonight's rows.
    table: pa.Table
    recorded: set[str]  # of the paths looked up, those a previous row claims (its file is served)
    # of the paths looked up, those a quiet master's row claims: path -> "master (output)"
    claims: dict[str, str]


def rest(store: Store, quiet: set[str], channels: set[str], lookup: set[str],
         load: bool = True) -> Rest:
    """The previous rows a run loads (Rest.table, when `load`), reading in full only the row
    groups that hold some; and which of the `lookup` paths (tonight's planned ones, those an
    interrupted run's journal names) earlier rows claim, and by whom."""
    parts: list[pa.Table] = []
    recorded: set[str] = set()
    claims: dict[str, str] = {}
    if store.size(manifest.MANIFEST_NAME) is None:
        return Rest(SCHEMA.empty_table(), recorded, claims)
    keys = ["master_id", "channel", "output", "path", "status"]
    with _open(store) as parquet:
        for group in range(parquet.num_row_groups):
            masks = []
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=keys,
                                              row_groups=[group], use_threads=False):
                ids, chans = batch.column("master_id"), batch.column("channel")
                mine = _is_in(ids, quiet)
                masks.append(~np.asarray(pc.is_valid(chans)) | (_is_in(chans, channels) & ~mine))
                if lookup:
                    _claimed(batch, mine, lookup, recorded, claims)
            mask = np.concatenate(masks) if masks else np.zeros(0, bool)
            if not load or not mask.any():
                continue
            done = 0  # the group again, every column, a batch at a time: only its rows are held
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group],
                                              use_threads=False):
                keep = mask[done:done + batch.num_rows]
                done += batch.num_rows
                if keep.any():
                    parts.append(manifest.conform(batch.filter(pa.array(keep))))
    # One chunk: a take from a table of hundreds of chunks concatenates them first, every time
    # (previous_index takes each master's rows: minutes at 10,000 masters).
    table = pa.concat_tables(parts).combine_chunks() if parts else SCHEMA.empty_table()
    return Rest(table, recorded, claims)


def _claimed(batch: pa.RecordBatch, quiet: np.ndarray, lookup: set[str], recorded: set[str],
             claims: dict[str, str]) -> None:
    paths = batch.column("path").to_pylist()
    hits = [i for i, p in enumerate(paths) if p is not None and p in lookup]
    if not hits:
        return
    status = _plain(batch.column("status")).to_pylist()
    ids, outputs = _plain(batch.column("master_id")), batch.column("output")
    for i in hits:
        if status[i] in PUBLISHED:
            recorded.add(paths[i])
            if quiet[i]:
                claims[paths[i]] = f"{ids[i].as_py()} ({outputs[i].as_py()})"


# -- writing the new manifest --------------------------------------------------------------

def skipped_columns(rows: pa.Table, run_id: str) -> dict[str, pa.Array]:
    """The columns that make earlier rows this run's `skipped` rows (n/a rows stay n/a, with
    their reason): run, status, error and timings."""
    n = rows.num_rows
    na = pc.equal(rows.column("status"), Status.NOT_APPLICABLE.value)
    return {
        "run_id": pa.array([run_id] * n, pa.string()),
        "status": pc.if_else(na, Status.NOT_APPLICABLE.value, Status.SKIPPED.value),
        "error": pc.if_else(na, rows.column("error"), pa.scalar(None, pa.string())),
        "render_ms": pa.array([0.0] * n, pa.float64()),
        "decode_ms": pa.nulls(n, pa.float64()),
    }


def _restamp(rows: pa.Table, mask: np.ndarray, run_id: str) -> pa.Table:
    """`rows` with those under `mask` restamped as this run's skipped rows."""
    if not mask.any():
        return rows
    where = pa.array(mask)
    for name, column in skipped_columns(rows, run_id).items():
        i = rows.schema.get_field_index(name)
        rows = rows.set_column(i, name, pc.if_else(where, column, rows.column(name)))
    return rows


def write(store: Store, meta: dict[bytes, bytes], head: list[pa.Table], tonight: pa.Table,
          quiet: set[str], channels: set[str], run_id: str, masters: list[str],
          in_order: bool, on_quiet: Callable[[pa.Table], None]) -> str:
    """Write OUT/manifest.parquet atomically: `head` (kept and stale rows), then every row in
    the catalog's order (`masters`): the previous manifest's rows of channels this run did not
    render and of the quiet masters (restamped), streamed from the previous file, merged with
    `tonight`'s rows (in catalog order). `on_quiet` sees each batch of restamped quiet rows."""
    schema = SCHEMA.with_metadata(meta)
    index = {m: i for i, m in enumerate(masters)}
    tail_k = _lookup(tonight.column("master_id"), lambda v: index.get(v, -1), np.int64, -1)
    with scratch("manifest") as tmp:
        local = tmp / "part.parquet"
        with pq.ParquetWriter(local, schema, compression="zstd") as writer:
            for part in head:
                if part.num_rows:
                    writer.write_table(part.cast(SCHEMA).replace_schema_metadata(meta))
            earlier = _earlier(store, quiet, channels, run_id, index, on_quiet)
            for rows in _merged(earlier, tonight, tail_k, in_order):
                if rows.num_rows:
                    writer.write_table(rows.replace_schema_metadata(meta))
        store.write_file(manifest.MANIFEST_NAME, local)
    return store.path(manifest.MANIFEST_NAME)


def _earlier(store: Store, quiet: set[str], channels: set[str], run_id: str,
             index: dict[str, int], on_quiet: Callable[[pa.Table], None],
             ) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The previous rows the new manifest keeps, a batch at a time, with each row's master's
    place in tonight's catalog (-1: not in it)."""
    if store.size(manifest.MANIFEST_NAME) is None:
        return
    for batch in _batches(store):
        chans, ids = batch.column("channel"), batch.column("master_id")
        chosen = _is_in(chans, channels)
        mine = chosen & _is_in(ids, quiet)
        keep = (np.asarray(pc.is_valid(chans)) & ~chosen) | mine
        if not keep.any():
            continue
        if not keep.all():
            where = pa.array(keep)
            batch, ids, mine = batch.filter(where), ids.filter(where), mine[keep]
        rows = _restamp(manifest.conform(batch), mine, run_id)
        if mine.any():
            on_quiet(rows.filter(pa.array(mine)) if not mine.all() else rows)
        yield rows, _lookup(ids, lambda v: index.get(v, -1), np.int64, -1)


def _merged(earlier: Iterator[tuple[pa.Table, np.ndarray]], tonight: pa.Table,
            tail_k: np.ndarray, in_order: bool) -> Iterator[pa.Table]:
    """Earlier rows and tonight's, in catalog order. Earlier rows keep their order (a master
    not in the catalog stays after the one before it); tonight's go in by their master's place.
    When the earlier rows are not in tonight's order (the listing was reordered), every row is
    sorted in memory instead."""
    if not in_order:
        parts = list(earlier)
        tables = [t for t, _ in parts] + [tonight]
        keys = np.concatenate([k for _, k in parts] + [tail_k])
        yield pa.concat_tables(tables).take(pa.array(np.argsort(keys, kind="stable")))
        return
    done, before = 0, -1
    for rows, k in earlier:
        run = np.maximum.accumulate(np.maximum(k, before))
        before = int(run[-1])
        upto = int(np.searchsorted(tail_k, before, side="right"))
        if upto == done:  # none of tonight's rows goes in this batch
            yield rows
            continue
        # Each of tonight's rows goes before the first earlier row of a later master: slices
        # of both, in turn (a take across them copied every column again, and was 5x slower).
        at = np.searchsorted(run, tail_k[done:upto], side="right")
        cuts = np.flatnonzero(np.diff(at)) + 1  # where the place changes: a run of rows each
        pieces, start = [], 0
        for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(at)]]),
                        strict=True):
            pieces += [rows.slice(start, int(at[a]) - start), tonight.slice(done + a, b - a)]
            start = int(at[a])
        pieces.append(rows.slice(start))
        yield pa.concat_tables(pieces)
        done = upto
    yield tonight.slice(done)
