"""The manifest: one row per (master, channel, output), with the contract's columns and types."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .store import write_atomic

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


def write(out: Path, rows: list[dict]) -> Path:
    """Write OUT/manifest.parquet atomically."""
    return _write_parquet(out / MANIFEST_NAME, rows)


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    buffer = io.BytesIO()
    pq.write_table(to_table(rows), buffer, compression="zstd")
    write_atomic(path, buffer.getvalue())
    return path


def write_history(out: Path, run_id: str, rows: list[dict]) -> Path:
    """OUT/_runs/<run_id>.parquet: this run's rows, kept for `fanout diff`."""
    return _write_parquet(out / RUNS_DIR / f"{run_id}.parquet", rows)


def read(out: Path) -> pa.Table:
    return pq.read_table(out / MANIFEST_NAME)


def read_rows(path: Path) -> list[dict]:
    """Rows of a manifest or history file; [] when there is none (a first run)."""
    if not path.exists():
        return []
    return pq.read_table(path).to_pylist()


def runs(out: Path) -> list[Path]:
    """History files, oldest first (run ids start with a UTC timestamp)."""
    return sorted((out / RUNS_DIR).glob("*.parquet"))
