"""Masters from a folder or a CSV/Parquet listing; ids validated; kind sniffed from content.

A problem with one master (bad id, duplicate id, bad role, a path that is a FIFO, a symlink
loop or an unknown URL scheme, any odd value in its row) is recorded on that master and it
fails alone; a problem with the listing itself (unreadable, missing, duplicate or misspelt
columns) is a ConfigError.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import formats
from .errors import ConfigError
from .geometry import aspect_key
from .masters import Token, change_token, is_racy, open_master, read_error, url_problem
from .store import is_url

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")  # whole value: fullmatch, never match
ROLES = ("product", "editorial")
# Columns fanout reads (alt, title and tags: the catalog's extra data, coming with its issue).
# An unknown column close to one of these is a misspelling that would silently lose the data.
KNOWN_COLUMNS = ("id", "path", "product", "position", "role", "alt", "title", "tags", "focus_x",
                 "focus_y")
# difflib ratio: "postion" 0.93, "pth" 0.86, "titel" 0.8; "product_id" (0.82) too, refused only
# while there is no `product` column, where it most likely means product.
MISSPELT_CUTOFF = 0.8
# Positions are int32 in the manifest and go into file names (Amazon's PT01..PT08). No channel
# uses more than a handful per product, so a value past this is a column mix-up (a price, an
# EAN), refused on its row before it overflows the manifest.
MAX_POSITION = 1_000_000
LISTING_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Editors' crop boxes (and focal points) live next to the listing: <listing stem>.crops.toml.
CROPS_SUFFIX = ".crops.toml"


@dataclass(frozen=True, slots=True)  # slots: a million masters, a third less memory
class Master:
    id: str
    path: str  # local absolute path or an fsspec URL
    product: str
    position: int = 0
    role: str = "product"
    kind: str | None = None  # "image", "video", or None when the content is not recognised
    errors: tuple[str, ...] = field(default=())
    alt: str | None = None  # alt text, for the gallery export and the storefront
    title: str | None = None
    tags: tuple[str, ...] = ()  # Parquet list or CSV "a|b|c"
    # An editor's framing, in the oriented master: a focal point (fractions 0..1) every fill
    # crop keeps near its centre, and crop boxes (x, y, w, h pixels) keyed by aspect ("16:9")
    # or output ("web/hero"), which win over any automatic crop.
    focus: tuple[float, float] | None = None
    boxes: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()
    extra: dict[str, str] = field(default_factory=dict, hash=False)  # every other column
    # Its change token (masters.change_token) when the catalog was read; None: none to trust.
    token: Token | None = field(default=None, compare=False)

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None


@dataclass(frozen=True)
class Known:
    """What the previous run recorded of each master, by path: (change token, kind), and when
    that run started. A master whose token is the same and not racy has the same bytes, so
    its kind is the recorded one and its first bytes need not be read to sniff it."""

    masters: dict[str, tuple[Token, str | None]]
    since_ns: int | None

    def unchanged(self, path: str, token: Token | None) -> bool:
        recorded = self.masters.get(path)
        return (token is not None and recorded is not None and recorded[0] == token
                and not is_racy(token, self.since_ns))


# The previous run's record while load_catalog runs (None: sniff every master).
_KNOWN: ContextVar[Known | None] = ContextVar("known_masters", default=None)


def check_id(value: str, what: str = "id") -> str | None:
    """Why `value` is not a valid id, or None."""
    if not ID_PATTERN.fullmatch(value):
        return f"invalid {what} {value!r}: expected [A-Za-z0-9][A-Za-z0-9._/-]*"
    if ".." in value.split("/") or value.endswith("/") or "//" in value:
        return f"invalid {what} {value!r}: no '..' or empty path segments allowed"
    return None


def _sniff(path: str) -> tuple[str | None, str | None]:
    """(kind, problem): a master that cannot be opened (checked with stat first: a FIFO is never
    opened) has no kind, and says why, so its rows fail with the real reason."""
    if not path:
        return None, None  # the row already says "empty path"
    try:
        with open_master(path) as fh:
            return formats.sniff(fh.read(formats.SNIFF_BYTES)), None
    except Exception as exc:  # whatever the path or its backend raises: this master's error
        return None, str(read_error(exc))


def _finish(masters: list[Master]) -> list[Master]:
    """Sniff kinds, recording why a master cannot be read, and mark every master that shares
    its id with another."""
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
        token = change_token(m.path) if m.path else None
        known = _KNOWN.get()
        if known is not None and known.unchanged(m.path, token):
            kind, problem = known.masters[m.path][1], None
        else:
            kind, problem = _sniff(m.path)
        if problem:
            errors.append(problem)
        out.append(replace(m, kind=kind, errors=tuple(errors), token=token))
    return out


def _folder_master(rel: str, location: str) -> Master:
    name = rel.rsplit("/", 1)[-1]
    master_id = rel.rsplit(".", 1)[0] if "." in name else rel
    problem = check_id(master_id)
    return Master(id=master_id, path=location, product=master_id,
                  errors=(problem,) if problem else ())


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError): the stat check names it
        return str(path.absolute())


def from_folder(root: Path, exclude: Path | None = None) -> list[Master]:
    """Every file below `root` but hidden ones. Symlinked folders are not entered (os.walk's
    default); FIFOs, devices and broken links are listed, and fail with their reason."""
    masters = []
    skip = _resolved(exclude) if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and _resolved(here / d) != skip
        )
        for name in sorted(filenames):
            if not name.startswith("."):
                path = here / name
                masters.append(_folder_master(path.relative_to(root).as_posix(),
                                              _resolved(path)))
    return _finish(_with_crops(masters, _resolved(root), folder=True))


def from_folder_url(url: str) -> list[Master]:
    """Every object below an fsspec URL (s3://bucket/masters/) is a master."""
    try:
        fs, root = fsspec.core.url_to_fs(url)
        found = sorted(fs.find(root.rstrip("/")))
    except Exception as exc:  # a backend's own errors too (botocore's NoCredentialsError)
        raise ConfigError(f"{url}: cannot list catalog folder: {_reason(exc)}") from None
    root = root.rstrip("/")
    masters = []
    for path in found:
        rel = path[len(root) + 1:]
        if not any(part.startswith(".") for part in rel.split("/")):
            masters.append(_folder_master(rel, fs.unstrip_protocol(path)))
    return _finish(_with_crops(masters, url, folder=True))


def _reason(exc: Exception) -> str:
    return str(read_error(exc)).removeprefix("cannot read: ")


def _read_listing(location: str, kind: str) -> pa.Table:
    try:
        with open_master(location) as fh:  # stat first: a listing that is a FIFO never hangs
            if kind == "csv":
                return pacsv.read_csv(
                    fh, convert_options=pacsv.ConvertOptions(
                        column_types={"id": pa.string(), "path": pa.string(),
                                      "product": pa.string(), "role": pa.string(),
                                      "alt": pa.string(), "title": pa.string(),
                                      "tags": pa.string()},
                        strings_can_be_null=True,
                        null_values=[""],  # an id or a SKU "null", "NA" or "nan" is text
                    ),
                )
            return pq.read_table(fh, use_threads=False)
    except Exception as exc:  # pyarrow's ArrowInvalid, a remote backend's own errors...
        raise ConfigError(f"{location}: cannot read catalog listing: {_reason(exc)}") from None


def _check_columns(location: str, names: list[str]) -> None:
    """Refuse a listing whose columns would silently lose data: a name given twice (one of
    the two would win) or a misspelt known column (it would be ignored)."""
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{location}: catalog listing has column {name!r} twice")
    for name in names:
        if name in KNOWN_COLUMNS:
            continue
        key = name.strip().lower()
        close = difflib.get_close_matches(key, KNOWN_COLUMNS, n=1, cutoff=MISSPELT_CUTOFF)
        # Short names ("atl" for alt: ratio 0.67) are caught as a known name's letters swapped.
        close = close or [k for k in KNOWN_COLUMNS if key != k and sorted(key) == sorted(k)]
        if close and close[0] not in names:
            raise ConfigError(
                f"{location}: `{name}` looks like a misspelling of `{close[0]}`; rename the "
                "column (unknown columns are otherwise kept as extra data)"
            )
    missing = [c for c in ("id", "path") if c not in names]
    if missing:
        raise ConfigError(
            f"{location}: catalog listing needs columns id and path; missing {', '.join(missing)} "
            f"(found {', '.join(names) or 'none'})"
        )


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value: object, what: str) -> tuple[str | None, str | None]:
    """(text, problem) of a cell meant as text: a number (an id column read as integers) is
    written as text; null and NaN (pandas' missing value) are None."""
    if isinstance(value, str):
        return value, None
    if _is_null(value):
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    if isinstance(value, float) and value.is_integer():
        return str(int(value)), None
    return None, f"invalid {what} {value!r}: expected text"


def _position(value: object) -> tuple[int, str | None]:
    """(position, problem): null means 0, the main image."""
    number: int | None = None
    if _is_null(value):
        return 0, None
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,7}\s*", value):
        number = int(value)  # at most 7 digits: int() of a huge string is slow, then refused
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None or not 0 <= number <= MAX_POSITION:
        return 0, f"invalid position {value!r}: expected a whole number 0..{MAX_POSITION}"
    return number, None


def _row_path(value: object, base: str) -> tuple[str, str | None]:
    """(path, problem): relative to the listing unless absolute or a URL."""
    path, problem = _text(value, "path")
    if problem or not path:
        return "", problem or "empty path"
    if is_url(path) or os.path.isabs(path):
        return path, None
    return (f"{base}/{path}" if is_url(base) else os.path.normpath(os.path.join(base, path))), None


def _row_master(row: dict, where: str, base: str) -> Master:
    """One listing row as a Master; every problem with its values is recorded on it."""
    master_id, id_problem = _text(row.get("id"), "id")
    master_id = master_id or ""
    path, path_problem = _row_path(row.get("path"), base)
    product, product_problem = _text(row.get("product"), "product")
    product = product or master_id
    position, position_problem = _position(row.get("position"))
    role, role_problem = _text(row.get("role"), "role")
    role = role or "product"
    if role not in ROLES:
        role_problem = f"invalid role {role!r}: expected one of {', '.join(ROLES)}"
        role = "product"
    if product != master_id and not product_problem:
        product_problem = check_id(product, "product")
    alt, alt_problem = _text(row.get("alt"), "alt")
    title, title_problem = _text(row.get("title"), "title")
    tags, tags_problem = _tags(row.get("tags"))
    focus, focus_problem = _focus(row.get("focus_x"), row.get("focus_y"))
    problems = [id_problem or check_id(master_id), path_problem, product_problem,
                position_problem, role_problem, alt_problem, title_problem, tags_problem,
                focus_problem]
    return Master(id=master_id, path=path, product=product, position=position, role=role,
                  alt=alt, title=title, tags=tags, focus=focus, extra=_extra(row),
                  errors=tuple(f"{where}: {p}" for p in problems if p))


def _tags(value: object) -> tuple[tuple[str, ...], str | None]:
    """(tags, problem): a Parquet list of text, or text split on `|`."""
    if _is_null(value):
        return (), None
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split("|") if t.strip()), None
    if isinstance(value, list | tuple) and all(isinstance(t, str) for t in value):
        return tuple(value), None
    return (), f"invalid tags {value!r}: expected a list of text or 'a|b|c'"


def _fraction(value: object) -> float | None:
    """A number 0..1 (text "0.25" too), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def _focus(x: object, y: object) -> tuple[tuple[float, float] | None, str | None]:
    """(focal point, problem): focus_x and focus_y, both or neither, each 0..1."""
    if _is_null(x) and _is_null(y):
        return None, None
    if _is_null(x) or _is_null(y):
        given, missing = ("focus_x", "focus_y") if _is_null(y) else ("focus_y", "focus_x")
        return None, f"{given} without {missing}: a focal point needs both (0..1)"
    fx, fy = _fraction(x), _fraction(y)
    if fx is None or fy is None:
        return None, (f"invalid focal point ({x!r}, {y!r}): expected focus_x and focus_y "
                      "between 0 and 1")
    return (fx, fy), None


def _extra(row: dict) -> dict[str, str]:
    """Every column fanout does not read itself, as text (nulls left out)."""
    out = {}
    for name, value in row.items():
        if name in KNOWN_COLUMNS or _is_null(value):
            continue
        text, problem = _text(value, name)
        out[name] = text if text is not None and not problem else str(value)
    return out


def _broken_row(row: dict, where: str, exc: Exception) -> Master:
    value = row.get("id")
    master_id = value if isinstance(value, str) else where
    return Master(id=master_id, path="", product=master_id,
                  errors=(f"{where}: cannot read this row: {type(exc).__name__}: {exc}",))


def from_listing(location: str) -> list[Master]:
    suffix = Path(location.split("?")[0]).suffix.lower()
    table = _read_listing(location, LISTING_SUFFIXES[suffix])
    _check_columns(location, table.column_names)
    base = location.rsplit("/", 1)[0] if "/" in location else "."
    masters = []
    rows = (row for batch in table.to_batches(max_chunksize=10_000)  # not a million dicts at once
            for row in batch.to_pylist())
    for i, row in enumerate(rows, start=2 if suffix == ".csv" else 0):
        where = f"row {i}"
        try:
            masters.append(_row_master(row, where, base))
        except Exception as exc:  # one odd row fails alone, whatever it holds
            masters.append(_broken_row(row, where, exc))
    return _finish(_with_crops(masters, location))


def crops_location(location: str, folder: bool = False) -> str:
    """Where a catalog's crops sidecar lives: <listing stem>.crops.toml beside a listing, and
    <folder name>.crops.toml beside a folder (never inside it: every file there is a master)."""
    head, _, name = location.split("?")[0].rstrip("/").rpartition("/")
    stem = name if folder or "." not in name else name.rsplit(".", 1)[0]
    return f"{head}/{stem}{CROPS_SUFFIX}" if head else f"{stem}{CROPS_SUFFIX}"


def read_crops(location: str | Path) -> tuple[str, dict | None]:
    """(where the catalog's crops sidecar lives, its tables or None when there is none); what
    `fanout report` shows and extends. A sidecar that cannot be read is a ConfigError."""
    text = str(location)
    if is_url(text):
        folder = Path(text.split("?")[0]).suffix.lower() not in LISTING_SUFFIXES
    else:
        folder, text = Path(text).is_dir(), _resolved(Path(text))
    sidecar = crops_location(text, folder)
    return sidecar, _read_crops(sidecar)


def _read_crops(location: str) -> dict | None:
    """The sidecar's tables, or None when there is no sidecar; unreadable: a ConfigError."""
    if not (_exists(location) if is_url(location) else os.path.lexists(location)):
        return None
    try:
        with open_master(location) as fh:
            text = fh.read()
    except Exception as exc:  # whatever the path or its backend raises: the listing's error
        raise ConfigError(f"{location}: cannot read crops file: {_reason(exc)}") from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{location}: not a valid crops file: {exc}") from None


def _exists(location: str) -> bool:
    try:
        fs, path = fsspec.core.url_to_fs(location)
        return bool(fs.exists(path))
    except Exception:  # a backend's own errors (no credentials...)
        return False  # cannot even tell: a listing on a store without a sidecar


def _crop_entry(entry: object) -> tuple[tuple[float, float] | None,
                                       tuple[tuple[str, tuple[int, int, int, int]], ...],
                                       list[str]]:
    """(focus, boxes, problems) of one master's table in the crops file."""
    if not isinstance(entry, dict):
        return None, (), [f"expected a table of boxes, found {entry!r}"]
    focus, boxes, problems = None, [], []
    for key, value in entry.items():
        if key == "focus":
            if (isinstance(value, list) and len(value) == 2
                    and all(_fraction(v) is not None for v in value)):
                focus = (float(value[0]), float(value[1]))
            else:
                problems.append(f"focus = {value!r}: expected [x, y] between 0 and 1")
            continue
        if aspect_key(key) is None and (key.count("/") != 1 or not all(key.split("/"))):
            problems.append(f"{key!r}: expected an aspect ratio (\"16:9\"), an output "
                            "(\"channel/output\") or focus")
            continue
        if (isinstance(value, list) and len(value) == 4
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            boxes.append((key, (value[0], value[1], value[2], value[3])))
        else:
            problems.append(f"{key} = {value!r}: expected [x, y, w, h] in whole pixels")
    return focus, tuple(boxes), problems


def _with_crops(masters: list[Master], location: str, folder: bool = False) -> list[Master]:
    """Each master with its entry of the catalog's crops file (its focus overrides the
    columns'); a problem in an entry is that master's error, an entry naming no master of the
    catalog a ConfigError (most likely a misspelt id, whose crops would silently be lost)."""
    sidecar = crops_location(location, folder)
    tables = _read_crops(sidecar)
    if not tables:
        return masters
    ids = {m.id for m in masters}
    unknown = sorted(k for k in tables if k not in ids)
    if unknown:
        raise ConfigError(f"{sidecar}: no master with id {', '.join(map(repr, unknown))} in "
                          f"the {'folder' if folder else 'listing'}; fix or remove the entry")
    out = []
    for m in masters:
        if m.id not in tables:
            out.append(m)
            continue
        focus, boxes, problems = _crop_entry(tables[m.id])
        out.append(replace(m, focus=focus or m.focus, boxes=boxes, errors=m.errors + tuple(
            f"{Path(sidecar).name} [{m.id}]: {p}" for p in problems)))
    return out


def load_catalog(location: str | Path, exclude: Path | None = None,
                 known: Known | None = None) -> list[Master]:
    """A folder of masters or a .csv/.parquet listing (local path or fsspec URL). `known`:
    the previous run's tokens and kinds, so that an unchanged master is stat-ed, not read."""
    reset = _KNOWN.set(known)
    try:
        return _load_catalog(location, exclude)
    finally:
        _KNOWN.reset(reset)


def _load_catalog(location: str | Path, exclude: Path | None) -> list[Master]:
    text = str(location)
    suffix = Path(text.split("?")[0]).suffix.lower()
    if is_url(text):
        if problem := url_problem(text):
            raise ConfigError(f"{text}: {problem}")
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
