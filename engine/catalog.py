"""Masters from a folder or a CSV/Parquet listing; ids validated; kind sniffed from content.

A problem with one master (bad id, duplicate id, bad role) is recorded on that master and it
fails alone; a problem with the listing itself (unreadable, missing columns) is a ConfigError.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import ConfigError
from .store import is_url

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
ROLES = ("product", "editorial")
LISTING_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
SNIFF_BYTES = 64


@dataclass(frozen=True)
class Master:
    id: str
    path: str  # local absolute path or an fsspec URL
    product: str
    position: int = 0
    role: str = "product"
    kind: str | None = None  # "image", "video", or None when the content is not recognised
    errors: tuple[str, ...] = field(default=())

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None


def check_id(value: str, what: str = "id") -> str | None:
    """Why `value` is not a valid id, or None."""
    if not ID_PATTERN.match(value):
        return f"invalid {what} {value!r}: expected [A-Za-z0-9][A-Za-z0-9._/-]*"
    if ".." in value.split("/") or value.endswith("/") or "//" in value:
        return f"invalid {what} {value!r}: no '..' or empty path segments allowed"
    return None


def sniff_kind(head: bytes) -> str | None:
    """'image', 'video' or None, from the first bytes of a file (never from its extension)."""
    if head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n" or head[:6] in (
        b"GIF87a", b"GIF89a"
    ):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] in (b"II*\x00", b"MM\x00*") or head[:2] == b"BM":
        return "image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"):
            return "image"
        return "video"  # isom, mp41, mp42, qt, M4V, 3gp...
    if head[:12] in (b"\x00\x00\x00\x0cJXL \r\n\x87\n",) or head[:2] == b"\xff\x0a":
        return "image"
    if head[:4] == b"\x00\x00\x00\x0c" and head[4:8] == b"jP  ":
        return "image"
    stripped = head.lstrip()
    if stripped[:4] == b"<svg" or stripped[:5] == b"<?xml" or head[:4] == b"%PDF":
        return "image"  # recognised, and refused by the image decoder with a clear error
    if head[:4] == b"\x1a\x45\xdf\xa3" or head[:4] == b"OggS" or head[:3] == b"FLV":
        return "video"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[:4] == b"\x00\x00\x01\xba" or (len(head) >= 1 and head[0] == 0x47 and _is_ts(head)):
        return "video"
    return None


def _is_ts(head: bytes) -> bool:
    return len(head) < 189 or head[188] == 0x47


def _sniff(path: str) -> str | None:
    try:
        with fsspec.open(path, "rb") as fh:
            return sniff_kind(fh.read(SNIFF_BYTES))
    except (OSError, ValueError):
        return None  # unreadable: the render step reports the real error for this master


def _finish(masters: list[Master]) -> list[Master]:
    """Sniff kinds and mark every master that shares its id with another."""
    by_id: dict[str, list[Master]] = {}
    for m in masters:
        by_id.setdefault(m.id, []).append(m)
    out = []
    for m in masters:
        errors = list(m.errors)
        twins = by_id[m.id]
        if len(twins) > 1:
            others = ", ".join(t.path for t in twins if t is not m)
            errors.append(f"duplicate id {m.id!r}: also used by {others}")
        out.append(replace(m, kind=_sniff(m.path), errors=tuple(errors)))
    return out


def _folder_master(rel: str, location: str) -> Master:
    name = rel.rsplit("/", 1)[-1]
    master_id = rel.rsplit(".", 1)[0] if "." in name else rel
    problem = check_id(master_id)
    return Master(id=master_id, path=location, product=master_id,
                  errors=(problem,) if problem else ())


def from_folder(root: Path, exclude: Path | None = None) -> list[Master]:
    masters = []
    exclude = exclude.resolve() if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
        )
        for name in sorted(filenames):
            if not name.startswith("."):
                path = here / name
                masters.append(_folder_master(path.relative_to(root).as_posix(),
                                              str(path.resolve())))
    return _finish(masters)


def from_folder_url(url: str) -> list[Master]:
    """Every object below an fsspec URL (s3://bucket/masters/) is a master."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    masters = []
    for path in sorted(fs.find(root)):
        rel = path[len(root) + 1:]
        if not any(part.startswith(".") for part in rel.split("/")):
            masters.append(_folder_master(rel, fs.unstrip_protocol(path)))
    return _finish(masters)


def _read_listing(location: str, kind: str) -> pa.Table:
    try:
        with fsspec.open(location, "rb") as fh:
            if kind == "csv":
                return pacsv.read_csv(
                    fh, convert_options=pacsv.ConvertOptions(
                        column_types={"id": pa.string(), "path": pa.string(),
                                      "product": pa.string(), "role": pa.string()},
                        strings_can_be_null=True,
                    ),
                )
            return pq.read_table(fh, use_threads=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(f"{location}: cannot read catalog listing: {exc}") from None


def _position(value: object) -> tuple[int, str | None]:
    """(position, problem): null means 0, the main image."""
    if value is None:
        return 0, None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value), None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value), None
    return 0, f"invalid position {value!r}: expected a whole number >= 0"


def from_listing(location: str) -> list[Master]:
    suffix = Path(location.split("?")[0]).suffix.lower()
    table = _read_listing(location, LISTING_SUFFIXES[suffix])
    missing = [c for c in ("id", "path") if c not in table.column_names]
    if missing:
        raise ConfigError(
            f"{location}: catalog listing needs columns id and path; missing {', '.join(missing)} "
            f"(found {', '.join(table.column_names) or 'none'})"
        )
    base = location.rsplit("/", 1)[0] if "/" in location else "."
    masters = []
    for i, row in enumerate(table.to_pylist(), start=2 if suffix == ".csv" else 0):
        where = f"row {i}"
        errors = []
        master_id = str(row["id"]) if row.get("id") is not None else ""
        path = row.get("path")
        if problem := check_id(master_id):
            errors.append(f"{where}: {problem}")
        if not path:
            errors.append(f"{where}: empty path")
            path = ""
        elif not is_url(path) and not os.path.isabs(path):
            path = os.path.normpath(os.path.join(base, path)) if not is_url(base) else (
                f"{base}/{path}"
            )
        product = row.get("product") or master_id
        if product != master_id and (problem := check_id(str(product), "product")):
            errors.append(f"{where}: {problem}")
        position, problem = _position(row.get("position"))
        if problem:
            errors.append(f"{where}: {problem}")
        role = row.get("role") or "product"
        if role not in ROLES:
            errors.append(f"{where}: invalid role {role!r}: expected one of {', '.join(ROLES)}")
            role = "product"
        masters.append(Master(
            id=master_id, path=str(path), product=str(product), position=position, role=role,
            errors=tuple(errors),
        ))
    return _finish(masters)


def load_catalog(location: str | Path, exclude: Path | None = None) -> list[Master]:
    """A folder of masters or a .csv/.parquet listing (local path or fsspec URL)."""
    text = str(location)
    suffix = Path(text.split("?")[0]).suffix.lower()
    if is_url(text):
        return from_listing(text) if suffix in LISTING_SUFFIXES else from_folder_url(text)
    local = Path(text)
    if local.is_dir():
        return from_folder(local, exclude=exclude)
    if not local.exists():
        raise ConfigError(f"{text}: catalog not found")
    if suffix not in LISTING_SUFFIXES:
        raise ConfigError(
            f"{text}: a catalog is a folder or a .csv/.parquet listing; found a {suffix or 'file'}"
        )
    return from_listing(str(local.resolve()))
