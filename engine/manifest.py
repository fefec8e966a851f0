"""The manifest: one row per (master, channel, output), with the contract's columns and types."""

from __future__ import annotations

import io
import posixpath
from pathlib import Path

import pyarrow as pa
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


def _parquet(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(to_table(rows), buffer, compression="zstd")
    return buffer.getvalue()


def write(store: Store, rows: list[dict]) -> str:
    """Write OUT/manifest.parquet atomically; returns where."""
    store.write(MANIFEST_NAME, _parquet(rows))
    return store.path(MANIFEST_NAME)


def write_history(store: Store, run_id: str, rows: list[dict]) -> None:
    """OUT/_runs/<run_id>.parquet: this run's rows, kept for `fanout diff`."""
    store.write(f"{RUNS_DIR}/{run_id}.parquet", _parquet(rows))


def read(out: Path | str) -> pa.Table:
    data = Store(out).read(MANIFEST_NAME)
    if data is None:
        raise FileNotFoundError(f"{out}: no {MANIFEST_NAME}")
    return pq.read_table(io.BytesIO(data))


def read_rows(store: Store, relative: str = MANIFEST_NAME) -> list[dict]:
    """Rows of the manifest (or a history file); [] when there is none (a first run)."""
    data = store.read(relative)
    if data is None:
        return []
    return pq.read_table(io.BytesIO(data)).to_pylist()


def runs(store: Store) -> list[str]:
    """Run ids with a history file, oldest first (run ids start with a UTC timestamp)."""
    return sorted(
        posixpath.basename(p).removesuffix(".parquet")
        for p in store.files_under([RUNS_DIR]) if p.endswith(".parquet")
    )
