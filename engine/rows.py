"""The manifest row: one typed record per (master, channel, output), its status, and the Arrow
schema derived from it.

Every producer builds rows through `Row` (a misspelt column is a TypeError, not a silent
null) and every reader uses its fields. `OUT/manifest.parquet` and the run history hold these
columns, in this order; the README's manifest table documents them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Annotated, Any, get_type_hints

import pyarrow as pa


class Status(StrEnum):
    """A row's status. `kept`: the derivative failed this run, but the file an earlier run
    published stays served (the row keeps that file's facts, says why in `error`, and
    `stale_since` names the run since which it has not been refreshed)."""

    OK = "ok"  # rendered and published by this run
    SKIPPED = "skipped"  # unchanged since an earlier run; its file stands
    FAILED = "failed"  # failed, and no earlier file to serve (path null)
    KEPT = "kept"  # failed, and the last good file stays published
    REMOVED = "removed"  # history only: a stale row whose file this run deleted
    # Deliberately not made: a ladder rung above the master's own size, or a master below
    # its channel's min_source_long_side where the channel says below_min_source = "skip".
    # Not published (path null), not a failure (the exit code and summaries do not count it).
    NOT_APPLICABLE = "n/a"


PUBLISHED = (Status.OK.value, Status.SKIPPED.value, Status.KEPT.value)  # a file is served

# Column types beyond the default (str -> string, float -> float64).
Int32 = Annotated[int | None, pa.int32()]
Int64 = Annotated[int | None, pa.int64()]
Float64 = Annotated[float | None, pa.float64()]
Tags = Annotated[list[str] | None, pa.list_(pa.string())]
Extra = Annotated[dict[str, str] | None, pa.map_(pa.string(), pa.string())]
Widths = Annotated[list[int] | None, pa.list_(pa.int32())]


@dataclass(slots=True, kw_only=True)
class Row:
    """One derivative of one master in one channel output, as a run left it."""

    run_id: str | None = None  # the run that last wrote the row
    master_id: str
    master_path: str | None = None
    master_sha256: str | None = None
    master_kind: str | None = None  # image, video, or None when unrecognised
    channel: str | None = None  # None: the master could not be planned at all
    output: str | None = None
    path: str | None = None  # relative to OUT; None when nothing is served
    status: str = Status.FAILED.value
    error: str | None = None
    format: str | None = None
    width: Int32 = None
    height: Int32 = None
    bytes: Int64 = None
    sha256: str | None = None
    quality: Int32 = None
    duration_s: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    bitrate: Int64 = None
    recipe_hash: str | None = None
    render_ms: float | None = None
    # Beyond the contract: what feeds and reports need without re-reading the catalog.
    product: str | None = None
    position: Int32 = None
    role: str | None = None
    preset: str | None = None
    decode_ms: float | None = None
    stale_since: str | None = None  # kept rows: the first run that failed to refresh the file
    # The catalog's own data about the master (listing columns), carried to every export.
    alt: str | None = None
    title: str | None = None
    tags: Tags = None
    extra: Extra = None  # every other listing column, as text
    # Lineage: where the file's pixels came from (README, "Output and manifest").
    source_width: Int32 = None  # the master, oriented (a video's upright frame)
    source_height: Int32 = None
    region_x: Int32 = None  # the part of the master the output shows, after trim and crop
    region_y: Int32 = None
    region_w: Int32 = None
    region_h: Int32 = None
    trim_x: Int32 = None  # the trim box (null: no trim asked, or nothing to trim)
    trim_y: Int32 = None
    trim_w: Int32 = None
    trim_h: Int32 = None
    scale: Float64 = None  # output pixels per master pixel (> 1: enlarged)
    crop_by: str | None = None  # centre, a gravity, attention, focus, editor; null: no crop
    encoder: str | None = None  # the encoder and the settings that decided the bytes
    # SSIMULACRA2 of the written file against the derivative's own lossless rendering (100 =
    # identical, 90 visually lossless, 70 high quality); null where not scored (fixed quality).
    score: Float64 = None
    # A breakpoints set (preset key `breakpoints`): the widths chosen for this master, on each
    # chosen file's row (the candidates not chosen are `n/a` rows).
    breakpoints: Widths = None
    # The master's change token when it was last hashed (masters.change_token): the stat fields
    # git's index trusts, or an object store's ETag / version id / generation. A master whose
    # token is unchanged (and not "racy") is not read again; null: always hashed.
    master_size: Int64 = None
    master_mtime_ns: Int64 = None
    master_ctime_ns: Int64 = None
    master_inode: Int64 = None
    master_etag: str | None = None
    # Everything planning read of the master and its token, as one hash (quiet.master_digest),
    # on the rows that stand: a master whose digest, channels and rows are as the previous run
    # left them is not planned again (quiet.py).
    plan_digest: str | None = None

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        return (self.master_id, self.channel, self.output)

    @property
    def published(self) -> bool:
        """Its file is served (ok, skipped or kept, with a path)."""
        return self.status in PUBLISHED and self.path is not None

    def replace(self, **changes: Any) -> Row:  # noqa: ANN401
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, name: str) -> Any:  # noqa: ANN401
        """Read access by column name, for notebooks (row["sha256"]); an unknown name is a
        KeyError, never a silent None."""
        if name not in COLUMNS:
            raise KeyError(name)
        return getattr(self, name)


def _arrow_type(hint: Any) -> pa.DataType:  # noqa: ANN401
    meta = getattr(hint, "__metadata__", ())
    if meta:
        return meta[0]
    return pa.float64() if float in getattr(hint, "__args__", (hint,)) else pa.string()


SCHEMA = pa.schema([(name, _arrow_type(hint))
                    for name, hint in get_type_hints(Row, include_extras=True).items()])
COLUMNS = frozenset(SCHEMA.names)


def to_table(rows: list[Row]) -> pa.Table:
    return pa.table({name: [getattr(r, name) for r in rows] for name in SCHEMA.names},
                    schema=SCHEMA)


def from_table(table: pa.Table) -> list[Row]:
    """Rows of a table with SCHEMA's columns (manifest.conform makes any manifest so)."""
    rows = []
    for d in table.to_pylist():
        if d.get("extra") is not None:  # Arrow hands a map back as (key, value) pairs
            d["extra"] = dict(d["extra"])
        rows.append(Row(**d))
    return rows


class TableRows(Sequence[Row]):
    """Rows kept as an Arrow table and made Row objects only as they are read: a night that
    removed 300,000 files reports them without holding 300,000 Python rows (the CLI counts
    them)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i: int | slice) -> Any:  # noqa: ANN401 (a Row, or a list of Rows)
        if isinstance(i, slice):
            start, stop, step = i.indices(self.table.num_rows)
            if step == 1:
                return from_table(self.table.slice(start, max(0, stop - start)))
            return [self[k] for k in range(start, stop, step)]
        n = self.table.num_rows
        if not -n <= i < n:
            raise IndexError(i)
        return from_table(self.table.slice(i % n, 1))[0]

    def __iter__(self) -> Iterator[Row]:
        for batch in self.table.to_batches(max_chunksize=10_000):
            yield from from_table(pa.Table.from_batches([batch], schema=self.table.schema))

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return f"TableRows({len(self)} rows)"
