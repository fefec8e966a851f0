"""Where outputs go and how they appear: never outside OUT, always whole, one writer at a time.

OUT is a local folder or any fsspec URL (s3://bucket/prefix, gs://...). Locally a file appears
by atomic rename; in an object store a PUT is atomic already (readers see the old object or the
new one, never part of one).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import ConfigError

LOCK_NAME = ".fanout.lock"
TMP_SUFFIX = ".tmp"
# An object-store lock is refreshed while its run lives; one not refreshed for this long was
# left by a run that died, and the next run takes it over.
REMOTE_LOCK_STALE_S = 300
REMOTE_LOCK_BEAT_S = 60


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


def sha256_of(fh: BinaryIO) -> str:
    """sha256 of an open file, read in 1 MiB chunks (a video may be gigabytes)."""
    digest = hashlib.sha256()
    while chunk := fh.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


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


class Store:
    """OUT, local or remote, addressed by paths relative to it."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        if is_url(text):
            self.fs, path = fsspec.core.url_to_fs(text)
            self.root = path.rstrip("/")
            self.location = text.rstrip("/")
            self.local = False
        else:
            self.fs = LocalFileSystem()
            self.root = str(Path(text).resolve())
            self.location = self.root
            self.local = True

    def path(self, relative: str) -> str:
        """The full path of OUT/relative, refusing anything that would land outside OUT."""
        clean = posixpath.normpath(relative)
        if clean.startswith("/") or clean == ".." or clean.startswith("../"):
            raise ValueError(f"output path {relative!r} would leave {self.location}")
        return f"{self.root}/{clean}"

    def prepare(self) -> None:
        if self.local:
            root = Path(self.root)
            if root.exists() and not root.is_dir():
                raise ConfigError(f"{root}: --out must be a folder; found a file")
            root.mkdir(parents=True, exist_ok=True)

    def write(self, relative: str, data: bytes) -> None:
        if self.local:
            write_atomic(Path(self.path(relative)), data)
        else:
            self.fs.pipe_file(self.path(relative), data)

    def write_file(self, relative: str, local: Path) -> None:
        """Publish a finished local file (a video) as OUT/relative, atomically."""
        target = self.path(relative)
        if self.local:
            dest = Path(target)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
            try:
                shutil.copyfile(local, tmp)
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        else:
            self.fs.put_file(str(local), target)

    def sha256(self, relative: str) -> str | None:
        """The sha256 of OUT/relative, read in chunks; None when there is no such file."""
        try:
            with self.fs.open(self.path(relative), "rb") as fh:
                return sha256_of(fh)
        except (FileNotFoundError, IsADirectoryError):
            return None

    def read(self, relative: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(relative))
        except (FileNotFoundError, IsADirectoryError):
            return None

    def files_under(self, folders: Iterable[str]) -> set[str]:
        """Relative paths of the files below OUT/<folder> for each folder (temporaries excluded)."""
        found = set()
        for folder in folders:
            base = self.path(folder)
            if not self.fs.exists(base):
                continue
            for path in self.fs.find(base):
                name = posixpath.basename(path)
                if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
                    found.add(posixpath.relpath(path, self.root))
        return found

    def remove(self, relative_paths: Iterable[str]) -> int:
        """Delete outputs that no longer belong, and local folders left empty; returns how many."""
        count = 0
        for relative in relative_paths:
            target = self.path(relative)
            if not self.fs.isfile(target):
                continue
            self.fs.rm_file(target)
            count += 1
            if self.local:
                parent = Path(target).parent
                while str(parent) != self.root and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
        return count

    def sweep_temporaries(self) -> int:
        """Remove temporary files a killed run left behind (local OUT only; PUTs leave none)."""
        if not self.local:
            return 0
        count = 0
        for path in Path(self.root).rglob(f".*{TMP_SUFFIX}"):
            if path.is_file():
                path.unlink(missing_ok=True)
                count += 1
        return count

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold OUT for one writer while the block runs."""
        lock = _local_lock if self.local else _remote_lock
        with lock(self):
            yield


@contextmanager
def _local_lock(store: Store) -> Iterator[None]:
    """flock: the kernel drops it when the process dies (even by kill -9), so a crashed run
    never blocks the next one."""
    path = Path(store.root) / LOCK_NAME
    fh = open(path, "a+")  # noqa: SIM115 (held for the whole block)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ConfigError(
                f"{store.location}: in use by another fanout render ({holder}); "
                "wait for it to finish"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield
    finally:
        fh.close()


@contextmanager
def _remote_lock(store: Store) -> Iterator[None]:
    """A lock object, refreshed every minute; one not refreshed for 5 minutes is taken over.

    Object stores have no flock: this is best effort (two runs starting in the same second can
    both take it), which is what a nightly scheduler that never overlaps its own runs needs.
    """
    me = f"pid {os.getpid()} on {socket.gethostname()} ({uuid.uuid4().hex[:8]})"
    raw = store.read(LOCK_NAME)
    if raw:
        try:
            held = json.loads(raw)
        except ValueError:
            held = {"holder": "unknown", "beat": 0}
        if time.time() - float(held.get("beat", 0)) < REMOTE_LOCK_STALE_S:
            raise ConfigError(f"{store.location}: in use by another fanout render "
                              f"({held.get('holder')}); wait for it to finish")
    stop = threading.Event()

    def beat() -> None:
        while True:
            store.write(LOCK_NAME, json.dumps({"holder": me, "beat": time.time()}).encode())
            if stop.wait(REMOTE_LOCK_BEAT_S):
                return

    beat_thread = threading.Thread(target=beat, name="fanout-lock", daemon=True)
    beat_thread.start()
    try:
        yield
    finally:
        stop.set()
        beat_thread.join()
        store.fs.rm_file(store.path(LOCK_NAME))
