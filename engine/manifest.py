"""The manifest: one row per (master, channel, output), with the contract's columns and types."""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .catalog import Known
from .errors import ConfigError
from .masters import TOKEN_COLUMNS, Token
from .rows import PUBLISHED, SCHEMA, Row, Status, from_table, to_table
from .scratch import scratch
from .store import Store

MANIFEST_NAME = "manifest.parquet"
RUNS_DIR = "_runs"  # history: one file of rows per run
# A run's history is written as <run>.pending.parquet and renamed to <run>.parquet once the
# manifest that commits the run is in place; <run>.journal.parquet lists the paths the run may
# create and the files it will remove, so that a run killed at any point can be finished or
# undone by the next one.
PENDING_SUFFIX = ".pending.parquet"
JOURNAL_SUFFIX = ".journal.parquet"
# Key-value metadata of manifest.parquet: the run it commits and the configuration it used.
META_RUN = b"fanout.run_id"
META_CONFIG = b"fanout.config"
# When the run began (time.time_ns(), before it stat-ed any master): a master stamped this
# close to it may have changed after the run read it (masters.is_racy).
META_STARTED = b"fanout.started_ns"
# The catalog the run read (an absolute path or a URL): `fanout report` finds its crops file.
META_CATALOG = b"fanout.catalog"
# Key-value metadata of a run's history file. A "delta" history holds what the run changed:
# rows it rendered, failed, kept or restated (its master's columns changed), the rows it
# removed, and rows it left as they were (stale ones, with --keep-stale); every other row of
# the channels it rendered (META_CHANNELS) is one it recorded `skipped` (or n/a) unchanged.
# A history without the key (written before deltas) holds every row of its run.
META_HISTORY = b"fanout.history"
HISTORY_DELTA = "delta"
META_CHANNELS = b"fanout.channels"
# How many rows the run recorded `skipped` (a delta history leaves them out): `fanout diff`
# reports any run's unchanged count without rebuilding the manifest it committed.
META_UNCHANGED = b"fanout.unchanged"

__all__ = ["PUBLISHED", "SCHEMA", "Row", "Status", "from_table", "to_table"]  # re-exported


def _read_parquet(source: bytes | Path, columns: list[str] | None = None) -> pa.Table:
    """Every Parquet read of fanout's own files. Without Arrow's thread pool: its threads, alive
    at interpreter exit after a video render, aborted the process ("terminate called without
    an active exception", 3 runs in 3); the files are small enough for one thread."""
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    return pq.read_table(data, columns=columns, use_threads=False)


class CorruptManifest(ConfigError):
    """OUT/manifest.parquet cannot be read; `fanout recover OUT` rebuilds it from the history."""


def read_state(store: Store) -> tuple[pa.Table, dict[bytes, bytes]]:
    """The manifest and its metadata (the run it commits, its configuration); an empty table
    and {} on a first run. A manifest that cannot be read stops the run: treating it as empty
    would re-render everything and orphan every published file."""
    data = store.read(MANIFEST_NAME)
    if data is None:
        return SCHEMA.empty_table(), {}
    try:
        table = _read_parquet(data)
    except (pa.ArrowException, OSError, ValueError) as exc:
        where = store.path(MANIFEST_NAME) if store.local else f"{store.location}/{MANIFEST_NAME}"
        reason = "empty file" if not data else str(exc).splitlines()[0]
        raise CorruptManifest(
            f"{where}: cannot read the manifest ({reason}); no file was changed. Rebuild it "
            f"from the run history with: fanout recover {store.location}"
        ) from None
    return conform(table), dict(table.schema.metadata or {})


def read_meta(store: Store) -> dict[bytes, bytes]:
    """The manifest's metadata alone (its footer, not its rows); {} when there is none."""
    try:
        return read_footer(store, MANIFEST_NAME)
    except (FileNotFoundError, IsADirectoryError):
        return {}
    except (pa.ArrowException, OSError, ValueError):
        read_state(store)  # raises CorruptManifest with the recovery path
        raise


def batches(parquet: pq.ParquetFile, columns: list[str] | None = None,
            batch_rows: int = 1 << 16) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows a batch at a time, one row group after the other: a single
    iter_batches over the whole file pre-buffers every row group it has read until the end
    (RSS grew by 1.7 GB over a 30-million-row manifest; per row group it stays flat)."""
    for group in range(parquet.num_row_groups):
        yield from parquet.iter_batches(batch_size=batch_rows, row_groups=[group],
                                        columns=columns, use_threads=False)


def iter_tables(store: Store, batch_rows: int = 1 << 16, relative: str = MANIFEST_NAME,
                columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The manifest (or a history file) a batch of rows at a time, in SCHEMA's columns or only
    `columns`: what reads it whole at a million masters (30 million rows) streams it instead.
    Nothing when there is none."""
    if store.size(relative) is None:
        return
    with store.fs.open(store.path(relative), "rb") as fh:
        parquet = pq.ParquetFile(fh)
        have = [c for c in columns if c in parquet.schema_arrow.names] if columns else None
        for batch in batches(parquet, have, batch_rows):
            yield conform(pa.Table.from_batches([batch]), columns)


def read_footer(store: Store, relative: str) -> dict[bytes, bytes]:
    """The key-value metadata of one of OUT's Parquet files (the manifest, a history), from its
    footer; FileNotFoundError when there is none."""
    with store.fs.open(store.path(relative), "rb") as fh:
        return dict(pq.read_schema(fh).metadata or {})


def read_rows(store: Store, relative: str = MANIFEST_NAME) -> list[Row]:
    """Rows of the manifest (or a history file); [] when there is none (a first run)."""
    return from_table(read_table(store, relative))


def read_history(store: Store, run_id: str) -> tuple[list[Row], dict[bytes, bytes]]:
    """A run's history file: its rows and its metadata ({} for an older, full history)."""
    data = store.read(history_path(run_id))
    if data is None:
        return [], {}
    table = _read_parquet(data)
    return from_table(conform(table)), dict(table.schema.metadata or {})


def runs(store: Store) -> list[str]:
    """Committed run ids (with a history file), oldest first (ids start with a UTC timestamp)."""
    return sorted(
        posixpath.basename(p).removesuffix(".parquet")
        for p in store.files_under([RUNS_DIR])
        if p.endswith(".parquet") and not p.endswith((PENDING_SUFFIX, JOURNAL_SUFFIX))
    )


def history_path(run_id: str, suffix: str = ".parquet") -> str:
    return f"{RUNS_DIR}/{run_id}{suffix}"


def conform(table: pa.Table, names: list[str] | None = None) -> pa.Table:
    """A table with exactly SCHEMA's columns, or those `names` of them, in SCHEMA's types (an
    older manifest may lack the newer ones: nulls)."""
    schema = SCHEMA if names is None else pa.schema([SCHEMA.field(n) for n in names])
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def read_table(store: Store, relative: str = MANIFEST_NAME) -> pa.Table:
    """The manifest (or a history file) as an Arrow table; empty on a first run."""
    data = store.read(relative)
    if data is None:
        return SCHEMA.empty_table()
    return conform(_read_parquet(data))


class Spool:
    """This run's rows, streamed into a local Parquet file as masters finish, so the client
    holds one batch of rows at a time rather than a whole catalog's."""

    def __init__(self, folder: Path, batch_rows: int = 20_000) -> None:
        self.path = folder / "rows.parquet"
        self.batch_rows = batch_rows
        self._writer = pq.ParquetWriter(self.path, SCHEMA, compression="zstd")
        self._buffer: list[Row] = []

    def add(self, rows: list[Row]) -> None:
        self._buffer.extend(rows)
        if len(self._buffer) >= self.batch_rows:
            self._flush()

    def add_table(self, table: pa.Table) -> None:
        """Rows already in Arrow form (masters recorded without a task), written as they are."""
        self._flush()
        if table.num_rows:
            self._writer.write_table(table.select(SCHEMA.names).cast(SCHEMA))

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(to_table(self._buffer))
            self._buffer = []

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def abandon(self) -> None:
        """Close the spool file without writing what is buffered (a run that stopped)."""
        self._buffer = []
        self._writer.close()

    def in_order(self, master_ids: list[str]) -> pa.Table:
        """Every spooled row, in the order of `master_ids` (the catalog's): a cluster finishes
        masters in any order, the manifest lists them the same way every time. Arrow columns,
        a fraction of the memory of row dicts."""
        table = _read_parquet(self.path)
        where = pc.index_in(table.column("master_id"), value_set=pa.array(master_ids, pa.string()))
        return table.take(pc.sort_indices(where))

    def table(self, columns: list[str]) -> pa.Table:
        """Some columns of every spooled row (keys and paths, for settling the manifest)."""
        return _read_parquet(self.path, columns)


def write_parts(store: Store, relative: str, parts: Iterable[pa.Table],
                metadata: dict[bytes, bytes] | None = None) -> str:
    """Write tables, in order, as one Parquet file at OUT/relative, atomically."""
    schema = SCHEMA.with_metadata(metadata) if metadata else SCHEMA
    with scratch("manifest") as tmp:
        local = tmp / "part.parquet"
        with pq.ParquetWriter(local, schema, compression="zstd") as writer:
            for part in parts:
                if part.num_rows:
                    writer.write_table(part.replace_schema_metadata(metadata))
        store.write_file(relative, local)
    return store.path(relative)


def write_journal(store: Store, run_id: str, writes: list[str], removals: list[str]) -> None:
    """The paths a run may create and the files it will remove, before it does either."""
    table = pa.table({"path": pa.array(writes + removals, pa.string()),
                      "action": pa.array(["write"] * len(writes) + ["remove"] * len(removals),
                                         pa.string())})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    store.write(history_path(run_id, JOURNAL_SUFFIX), buffer.getvalue())


def read_journal(store: Store, relative: str) -> dict[str, list[str]]:
    """{"write": [...], "remove": [...]} of a journal; empty lists when it cannot be read
    (a journal cut short by a crash lists nothing fanout can trust)."""
    out: dict[str, list[str]] = {"write": [], "remove": []}
    data = store.read(relative)
    try:
        table = _read_parquet(data) if data else None
    except (pa.ArrowException, OSError, ValueError):
        table = None
    if table is not None:
        for path, action in zip(table.column("path").to_pylist(),
                                table.column("action").to_pylist(), strict=True):
            out.setdefault(action, []).append(path)
    return out


def meta_value(meta: dict[bytes, bytes], key: bytes) -> str | None:
    value = meta.get(key)
    return value.decode() if value else None


def encode_meta(values: dict[bytes, str]) -> dict[bytes, bytes]:
    return {k: v.encode() for k, v in values.items()}



def row_keys(table: pa.Table) -> pa.ChunkedArray:
    """master, channel and output joined: one string per row (null without a channel)."""
    return pc.binary_join_element_wise(
        table.column("master_id"), table.column("channel"), table.column("output"), "\x1f"
    )


def claimed_paths(table: pa.Table) -> pa.ChunkedArray:
    """Paths of the files rows of `table` stand for (failed rows stand for none)."""
    return table.filter(published_mask(table)).column("path")


def published_mask(table: pa.Table) -> pa.ChunkedArray:
    """True for rows whose file is served: ok, skipped or kept, with a path."""
    return pc.and_(pc.fill_null(pc.is_in(table.column("status"),
                                         value_set=pa.array(PUBLISHED, pa.string())), False),
                   pc.is_valid(table.column("path")))


def read_known(store: Store) -> Known | None:
    """Each master's change token and kind as the previous run recorded them (its own rows
    only: a row another run left has no start time to judge its token by), streamed from the
    manifest's columns that say so; None when there is no manifest or it cannot be read (the
    run's own read of it says why)."""
    try:
        meta = read_meta(store)
        last = meta_value(meta, META_RUN)
        if last is None:
            return None
        started = meta_value(meta, META_STARTED)
        columns = ["run_id", "master_path", "master_kind", *TOKEN_COLUMNS]
        known: dict[str, tuple[Token, str | None]] = {}
        with store.fs.open(store.path(MANIFEST_NAME), "rb") as fh:
            parquet = pq.ParquetFile(fh, read_dictionary=["run_id", "master_path"])
            if not set(columns) <= set(parquet.schema_arrow.names):
                return None  # written before change tokens: every master is read once
            for batch in batches(parquet, columns):
                known.update(_first_per_master(pa.Table.from_batches([batch]), last))
    except (pa.ArrowException, OSError, ValueError, ConfigError):
        return None
    return Known(known, int(started) if started else None)


def _first_per_master(table: pa.Table, run: str) -> dict[str, tuple[Token, str | None]]:
    """path -> (token, kind) of the rows of `run` with a token, one row per master (a master's
    rows are consecutive; a repeat across batches just overwrites the same value)."""
    table = table.filter(pc.and_(pc.equal(table.column("run_id"), run),
                                 pc.is_valid(table.column("master_path"))))
    if not table.num_rows:
        return {}
    paths = table.column("master_path").combine_chunks()
    codes = paths.indices if pa.types.is_dictionary(paths.type) else pc.dictionary_encode(
        paths).indices
    change = pc.not_equal(codes[1:], codes[:-1])
    first = pa.concat_arrays([pa.array([True]), change])
    rows = table.filter(first).to_pylist()
    return {r["master_path"]: (tuple(r[c] for c in TOKEN_COLUMNS), r["master_kind"])
            for r in rows if any(r[c] is not None for c in TOKEN_COLUMNS)}
