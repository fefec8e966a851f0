"""The one place a master is stat-ed, opened, read and hashed, with every problem as a MasterError.

A catalog row can point anywhere: a FIFO (opening it blocks forever), a device (/dev/zero never
ends), a symlink loop, a folder, a URL whose scheme nobody knows or whose library is not
installed, or a file larger than a worker's memory. Each becomes one line saying what is wrong,
so that master fails alone and the run goes on. A local master is checked with os.stat before
it is ever opened, and opened without blocking so that a file swapped for a FIFO in between is
still refused rather than waited on.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Callable
from typing import BinaryIO, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import known_implementations

from .errors import MasterError
from .limits import DEFAULT_MAX_MASTER_BYTES
from .store import is_url

T = TypeVar("T")

CHUNK = 1 << 20

# The fanout extra that installs a scheme's library (pyproject's optional-dependencies).
EXTRAS = {"s3": "s3", "s3a": "s3"}

_NOT_REGULAR = (
    (stat.S_ISDIR, "is a folder, not a file"),
    (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'; below 1 KiB the exact count."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def too_big(size: int, max_bytes: int) -> str:
    """The one-line refusal of a master over --max-master-bytes."""
    shown, limit = human_bytes(size), human_bytes(max_bytes)
    if shown == limit:  # just over the limit: rounding would say "2.0 GiB over 2.0 GiB"
        shown, limit = f"{size} bytes", f"{max_bytes} bytes"
    return f"is {shown}, over the limit of {limit} (--max-master-bytes)"


def url_problem(url: str) -> str | None:
    """Why fsspec cannot open `url` here (unknown scheme, library not installed), or None."""
    for part in url.split("::"):
        protocol = fsspec.core.split_protocol(part)[0]
        if protocol is None:
            continue
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError:
            return _missing_library(protocol)
        except ValueError:
            return f"unknown URL scheme {protocol!r}"
    return None


def _missing_library(protocol: str) -> str:
    if protocol in EXTRAS:
        extra = EXTRAS[protocol]
        return f"{protocol}:// needs the {extra} extra: pip install 'fanout[{extra}]'"
    package = known_implementations.get(protocol, {}).get("class", protocol).split(".")[0]
    return f"{protocol}:// needs the {package} package: pip install {package}"


def read_error(exc: Exception) -> MasterError:
    """An exception met on the way to a master's bytes, as one line.

    Callers catch every Exception there: besides OSError (the system), ValueError (a NUL byte,
    an unencodable name), RuntimeError and ImportError, a remote backend raises its own errors
    (botocore's NoCredentialsError is none of these), and one row fails alone whatever it meets.
    """
    if isinstance(exc, MasterError):
        return exc
    if isinstance(exc, MemoryError):
        return MasterError("out of memory reading")
    if isinstance(exc, FileNotFoundError):
        return MasterError("file not found")
    if isinstance(exc, IsADirectoryError):
        return MasterError("is a folder, not a file")
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return MasterError("symlink loop")
    if isinstance(exc, OSError) and exc.strerror:
        return MasterError(f"cannot read: {exc.strerror}")
    if type(exc).__module__ == "builtins":
        return MasterError(f"cannot read: {exc}")
    return MasterError(f"cannot read: {type(exc).__name__}: {exc}")


def _local(path: str) -> tuple[str | None, fsspec.AbstractFileSystem | None, str]:
    """(local path, None, '') for a file on this machine, else (None, filesystem, its path)."""
    if not is_url(path):
        return path, None, ""
    if problem := url_problem(path):
        raise MasterError(problem)
    fs, inner = fsspec.core.url_to_fs(path)
    if isinstance(fs, LocalFileSystem):  # file://: the same FIFO and device traps as a path
        return inner, None, ""
    return None, fs, inner


def _check_mode(mode: int) -> None:
    for test, problem in _NOT_REGULAR:
        if test(mode):
            raise MasterError(problem)
    if not stat.S_ISREG(mode):
        raise MasterError("is not a regular file")


def _check_size(size: int | None, max_bytes: int | None) -> None:
    if size is not None and max_bytes is not None and size > max_bytes:
        raise MasterError(too_big(size, max_bytes))


def check_master(path: str, max_bytes: int | None = None) -> int | None:
    """The master's size in bytes, from os.stat (following symlinks) or the filesystem's info,
    without opening it; a MasterError when it is not a regular file, cannot be reached or is
    over `max_bytes`. None when a remote filesystem does not tell the size (plain HTTP)."""
    try:
        local, fs, inner = _local(path)
        if local is not None:
            st = os.stat(local)
            _check_mode(st.st_mode)
            size: int | None = st.st_size
        else:
            assert fs is not None
            info = fs.info(inner)
            if info.get("type") == "directory":
                raise MasterError("is a folder, not a file")
            size = info.get("size")
    except Exception as exc:
        raise read_error(exc) from None
    _check_size(size, max_bytes)
    return size


def _open_local(path: str) -> BinaryIO:
    # O_NONBLOCK: if the file became a FIFO since it was checked, open returns at once (and
    # fstat refuses it) instead of waiting for a writer that never comes.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _check_mode(os.fstat(fd).st_mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_master(path: str) -> BinaryIO:
    """The master's file, open for reading, after check_master said it is a regular file."""
    check_master(path)
    try:
        local, fs, inner = _local(path)
        if local is not None:
            return _open_local(local)
        assert fs is not None
        return fs.open(inner, "rb")
    except Exception as exc:
        raise read_error(exc) from None


def reading(path: str, how: Callable[[BinaryIO], T]) -> T:
    """`how` applied to the master's open file; read errors as MasterError."""
    with open_master(path) as fh:
        try:
            return how(fh)
        except Exception as exc:
            raise read_error(exc) from None


def _read_whole(fh: BinaryIO, size: int | None, max_bytes: int | None) -> bytes:
    # One read of what stat said plus a byte (read(n) allocates n: never ask for max_bytes);
    # a file that grew since, or a remote one of unknown size, goes on in chunks to the limit.
    data = fh.read(size + 1) if size is not None else b""
    if size is not None and len(data) <= size:
        return data
    parts, total = [data], len(data)
    while chunk := fh.read(CHUNK):
        total += len(chunk)
        _check_size(total, max_bytes)
        parts.append(chunk)
    return b"".join(parts)


def read_master(path: str, max_bytes: int | None = DEFAULT_MAX_MASTER_BYTES) -> bytes:
    """The master's bytes, whole; refused before reading when it is over `max_bytes`."""
    size = check_master(path, max_bytes)

    def read(fh: BinaryIO) -> bytes:
        try:
            data = _read_whole(fh, size, max_bytes)
        except MemoryError:
            raise MasterError(f"out of memory reading ({size} bytes)") from None
        _check_size(len(data), max_bytes)
        return data

    return reading(path, read)


def hash_master(path: str, max_bytes: int | None = DEFAULT_MAX_MASTER_BYTES) -> tuple[str, int]:
    """(sha256, size) of a master read in 1 MiB chunks (a video may be gigabytes: never whole
    in memory); refused before reading when it is over `max_bytes`, and while reading when it
    grows past it (or a remote store did not tell its size)."""
    check_master(path, max_bytes)

    def digest(fh: BinaryIO) -> tuple[str, int]:
        sha, size = hashlib.sha256(), 0
        while chunk := fh.read(CHUNK):
            size += len(chunk)
            _check_size(size, max_bytes)
            sha.update(chunk)
        return sha.hexdigest(), size

    return reading(path, digest)


# -- change tokens ----------------------------------------------------------------------------
# What tells, without reading a master's bytes, that it is the one hashed last time: locally the
# stat fields git's index relies on (size, mtime_ns, ctime_ns, inode: rewriting a file changes
# its ctime even when its mtime is forged back), on an object store its own version token
# (S3 ETag / VersionId, GCS generation). A master whose mtime falls within the timestamp
# granularity of the previous run's start may have changed after that run read it, in the same
# clock tick: "racy", as git calls it, and hashed again (is_racy).
TOKEN_COLUMNS = ("master_size", "master_mtime_ns", "master_ctime_ns", "master_inode",
                 "master_etag")
# Keys of fsspec's info() that name one version of an object's bytes, most specific first.
VERSION_KEYS = ("VersionId", "version_id", "generation", "ETag", "etag", "md5Hash")
# A file system whose mtimes are whole seconds (FAT: 2 s) is coarse; Linux file timestamps
# come from a coarse clock that lags real time by up to a tick (1-10 ms). Either way a master
# stamped this close to (or after) the previous run's start cannot be trusted by its stat.
COARSE_NS = 2_000_000_000
FINE_NS = 50_000_000

Token = tuple[int | None, int | None, int | None, int | None, str | None]


def change_token(path: str) -> Token | None:
    """The master's change token (TOKEN_COLUMNS' values), from one stat or info call and no
    read; None when there is none to trust (not a regular file, unreachable, a remote store
    that names no version): such a master is always hashed."""
    try:
        local, fs, inner = _local(path)
        if local is not None:
            st = os.stat(local)
            if not stat.S_ISREG(st.st_mode):
                return None
            return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, None)
        assert fs is not None
        info = fs.info(inner)
    except Exception:  # noqa: BLE001 (the read that follows names the problem)
        return None
    version = next((f"{k}:{info[k]}" for k in VERSION_KEYS if info.get(k)), None)
    if version is None or info.get("type") == "directory":
        return None
    size = info.get("size")
    return (int(size) if size is not None else None, None, None, None, version)


def is_racy(token: Token, since_ns: int | None) -> bool:
    """The master was stamped too close to `since_ns` (the start of the run that recorded its
    token; None: unknown) for its stat to say it has not changed since that run read it."""
    mtime = token[1]
    if mtime is None:  # an object store's version token changes with every write
        return False
    if since_ns is None:
        return True
    margin = COARSE_NS if mtime % 1_000_000_000 == 0 else FINE_NS
    return mtime >= since_ns - margin


def change_token_columns(paths: list[str]) -> dict[str, list]:
    """TOKEN_COLUMNS as lists for `paths` (nulls where a master has no token)."""
    tokens = [change_token(p) or (None,) * len(TOKEN_COLUMNS) for p in paths]
    return {name: [t[i] for t in tokens] for i, name in enumerate(TOKEN_COLUMNS)}
