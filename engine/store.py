"""Where outputs go and how they appear: never outside OUT, always whole (atomic rename),
with one writer at a time."""

from __future__ import annotations

import fcntl
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError

LOCK_NAME = ".fanout.lock"
TMP_SUFFIX = ".tmp"


def resolve_inside(root: Path, relative: str) -> Path:
    """root/relative, refusing anything that would land outside root."""
    root = root.resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"output path {relative!r} would leave {root}")
    return target


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside the target, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold OUT for one writer. The kernel drops the lock when the process dies (even by
    kill -9), so a crashed run never blocks the next one."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fh = open(path, "a+")  # noqa: SIM115 (held for the whole block)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ConfigError(
                f"{out}: in use by another fanout render ({holder}); wait for it to finish"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield
    finally:
        fh.close()


def sweep_temporaries(out: Path) -> int:
    """Remove temporary files a killed run left behind; returns how many."""
    count = 0
    for path in out.rglob(f".*{TMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            count += 1
    return count


def files_under(out: Path, folders: Iterable[str]) -> set[str]:
    """Relative paths of the files below OUT/<folder> for each folder (temporaries excluded)."""
    found = set()
    for folder in folders:
        for path in (out / folder).rglob("*"):
            if path.is_file() and not path.name.endswith(TMP_SUFFIX):
                found.add(path.relative_to(out).as_posix())
    return found


def remove_files(out: Path, relative_paths: Iterable[str]) -> int:
    """Delete outputs that no longer belong (stale), and folders left empty; returns how many."""
    count = 0
    for relative in relative_paths:
        target = resolve_inside(out, relative)
        if target.is_file():
            target.unlink()
            count += 1
            parent = target.parent
            while parent != out.resolve() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    return count
