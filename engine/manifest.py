"""The manifest: one row per (master, channel, output), with the contract's columns and types."""

from __future__ import annotations

import io
import posixpath
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .store import Store

MANIFEST_NAME = "manifest.parquet"
RUNS_DIR = "_runs"  # history: one file of rows per run

SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("master_id", pa.string()),
    ("master_path", pa.string()),
    ("master_sha256", pa.string()),
    ("master_kind", pa.string()),
    ("channel", pa.string()),
    ("output", pa.string()),
    ("path", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("format", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("bytes", pa.int64()),
    ("sha256", pa.string()),
    ("quality", pa.int32()),
    ("duration_s", pa.float64()),
    ("video_codec", pa.string()),
    ("audio_codec", pa.string()),
    ("bitrate", pa.int64()),
    ("recipe_hash", pa.string()),
    ("render_ms", pa.float64()),
    # Beyond the contract: what feeds and reports need without re-reading the catalog.
    ("product", pa.string()),
    ("position", pa.int32()),
    ("role", pa.string()),
    ("preset", pa.string()),
    ("decode_ms", pa.float64()),
])


def to_table(rows: list[dict]) -> pa.Table:
    columns = {name: [row.get(name) for row in rows] for name in SCHEMA.names}
    return pa.table(columns, schema=SCHEMA)


def _read_parquet(source: bytes | Path, columns: list[str] | None = None) -> pa.Table:
    """Every Parquet read of fanout's own files. Without Arrow's thread pool: its threads, alive
    at interpreter exit after a video render, aborted the process ("terminate called without
    an active exception", 3 runs in 3); the files are small enough for one thread."""
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    return pq.read_table(data, columns=columns, use_threads=False)


def read(out: Path | str) -> pa.Table:
    data = Store(out).read(MANIFEST_NAME)
    if data is None:
        raise FileNotFoundError(f"{out}: no {MANIFEST_NAME}")
    return _read_parquet(data)


def read_rows(store: Store, relative: str = MANIFEST_NAME) -> list[dict]:
    """Rows of the manifest (or a history file); [] when there is none (a first run)."""
    return read_table(store, relative).to_pylist()


def runs(store: Store) -> list[str]:
    """Run ids with a history file, oldest first (run ids start with a UTC timestamp)."""
    return sorted(
        posixpath.basename(p).removesuffix(".parquet")
        for p in store.files_under([RUNS_DIR]) if p.endswith(".parquet")
    )


def conform(table: pa.Table) -> pa.Table:
    """A table with exactly SCHEMA's columns (an older manifest may lack the newer ones)."""
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


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
        self._buffer: list[dict] = []

    def add(self, rows: list[dict]) -> None:
        self._buffer.extend(rows)
        if len(self._buffer) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(to_table(self._buffer))
            self._buffer = []

    def close(self) -> None:
        self._flush()
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


def write_parts(store: Store, relative: str, parts: Iterable[pa.Table]) -> str:
    """Write tables, in order, as one Parquet file at OUT/relative, atomically."""
    with tempfile.TemporaryDirectory(prefix="fanout-manifest-") as tmp:
        local = Path(tmp) / "part.parquet"
        with pq.ParquetWriter(local, SCHEMA, compression="zstd") as writer:
            for part in parts:
                if part.num_rows:
                    writer.write_table(part)
        store.write_file(relative, local)
    return store.path(relative)


def row_keys(table: pa.Table) -> pa.ChunkedArray:
    """master, channel and output joined: one string per row (null without a channel)."""
    return pc.binary_join_element_wise(
        table.column("master_id"), table.column("channel"), table.column("output"), "\x1f"
    )


def claimed_paths(table: pa.Table) -> pa.ChunkedArray:
    """Paths of the files rows of `table` stand for (failed rows stand for none)."""
    published = pc.and_(pc.not_equal(table.column("status"), "failed"),
                        pc.is_valid(table.column("path")))
    return table.filter(published).column("path")
