"""Where outputs go and how they appear: never outside OUT, always whole, one writer at a time.

OUT is a local folder or any fsspec URL (s3://bucket/prefix, gs://...). Locally a file appears
by atomic rename; in an object store a PUT is atomic already (readers see the old object or the
new one, never part of one).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TextIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import ConfigError, UnsafePath

LOCK_NAME = ".fanout.lock"
TMP_SUFFIX = ".tmp"
# The exact names fanout's own temporaries have (".NAME.<12 hex>.tmp"): a sweep removes these
# and nothing else, so a user's ".notes.tmp" under OUT is never touched.
TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
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


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")


class Protected:
    """The catalog's masters, which no cleanup may delete, whatever path names them (a master
    kept under OUT, or reached by a link): locally by inode, from the change token the catalog
    already stat-ed, and, for a master without one, by its resolved path, resolved only when a
    removal asks (resolving a million masters' paths on every run took minutes)."""

    def __init__(self, paths: Iterable[str] = (), inodes: Iterable[int] = ()) -> None:
        self.paths = list(paths)
        self.inodes = frozenset(inodes)
        self._resolved: set[str] | None = None
        self._objects = {p.split("://", 1)[-1] for p in self.paths}

    def holds(self, target: str, local: bool = True) -> bool:
        if not local:  # an object store: no links, no inodes; the same object or not
            return target.split("://", 1)[-1] in self._objects
        try:
            if os.stat(target).st_ino in self.inodes:
                return True
        except OSError:
            pass
        if self._resolved is None:
            self._resolved = {os.path.realpath(p) for p in self.paths if "://" not in p}
        return os.path.realpath(target) in self._resolved


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside the target, then rename: readers never see a partial
    file."""
    _atomically(path, lambda tmp: tmp.write_bytes(data))


def stream_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write` into an open file under a temporary name beside `path`, then rename: a failure
    halfway leaves `path` as it was (a long export never replaces a good file with part of one)."""
    def make(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)
    _atomically(path, make)


def text_writer(write: Callable[[TextIO], object]) -> Callable[[BinaryIO], None]:
    """A writer of text as one of bytes (UTF-8, newlines as written), for stream_atomic."""
    def into(sink: BinaryIO) -> None:
        text = io.TextIOWrapper(sink, "utf-8", newline="")
        try:
            write(text)
            text.flush()
        finally:
            text.detach()  # the file is stream_atomic's to close
    return into


def copy_atomic(source: Path, path: Path) -> None:
    """Copy a finished local file to `path` by way of a temporary name and a rename."""
    _atomically(path, lambda tmp: shutil.copyfile(source, tmp))


def _atomically(path: Path, make: Callable[[Path], object]) -> None:
    """`make` the file under a temporary name beside `path`, then rename it into place. An
    error names the target (a full disk says which file it could not write)."""
    tmp = _temporary(path)
    try:
        if not os.path.lexists(path.parent):  # a file there: "Not a directory", from the write
            path.parent.mkdir(parents=True, exist_ok=True)
        make(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):  # under a file, the temporary's name cannot even be looked up
            tmp.unlink(missing_ok=True)
        if exc.filename is not None and str(exc.filename) == str(path):
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    except BaseException:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _is_link(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class Store:
    """OUT, local or remote, addressed by paths relative to it."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        self._big_folders: set[str] = set()  # object-store folders asked file by file (sizes)
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

    def prepare(self) -> bool:
        """Make OUT if it is missing; True when this call created it."""
        if not self.local:
            return False
        root = Path(self.root)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"{root}: --out must be a folder; found a file")
        existed = root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{exc.filename or root}: cannot create --out: "
                              f"{exc.strerror or exc}") from None
        return not existed

    def unsafe(self, relative: str) -> str | None:
        """Why fanout must not write or delete OUT/relative, or None.

        fanout never writes or deletes through a symbolic link inside OUT: `OUT/web -> /srv`
        would make a write or a cleanup land outside OUT. Local OUT only (object stores have
        no links); OUT itself may be a link, chosen by its owner.
        """
        if not self.local:
            return None
        parts = posixpath.normpath(relative).split("/")
        current = self.root
        for part in parts:
            current = f"{current}/{part}"
            if _is_link(current):
                shown = posixpath.relpath(current, self.root)
                return f"{shown} is a symbolic link; fanout never writes or deletes through links"
        return None

    def _checked(self, relative: str) -> str:
        target = self.path(relative)
        problem = self.unsafe(relative)
        if problem is not None:
            raise UnsafePath(problem)
        return target

    def write(self, relative: str, data: bytes) -> None:
        target = self._checked(relative)
        if self.local:
            write_atomic(Path(target), data)
        else:
            self.fs.pipe_file(target, data)

    def write_file(self, relative: str, local: Path) -> None:
        """Publish a finished local file (a video) as OUT/relative, atomically."""
        target = self._checked(relative)
        if self.local:
            copy_atomic(local, Path(target))
        else:
            self.fs.put_file(str(local), target)

    def rename(self, relative: str, new_relative: str) -> None:
        """Rename one of fanout's own bookkeeping files under OUT (a run's history)."""
        if self.local:
            os.replace(self._checked(relative), self._checked(new_relative))
        else:
            self.fs.mv(self.path(relative), self.path(new_relative))

    def size(self, relative: str) -> int | None:
        """Bytes of the regular file OUT/relative; None when there is none (or it is a link)."""
        try:
            if self.local:
                info = os.lstat(self.path(relative))
                return info.st_size if stat.S_ISREG(info.st_mode) else None
            return int(self.fs.size(self.path(relative)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def sizes(self, relatives: list[str]) -> list[int | None]:
        """size() of many files. Locally one lstat each; in an object store one listing per
        folder asked about more than once (s3fs: a LIST returns up to 1,000 keys with their
        sizes) rather than a HEAD per file: with a folder per master and channel, several
        times fewer requests. A folder found much larger than what was asked of it (a flat
        folder of a million products' files) is asked file by file from then on."""
        if self.local:
            return [self.size(r) for r in relatives]
        wanted: dict[str, int] = {}
        for relative in relatives:
            folder = posixpath.dirname(self.path(relative))
            wanted[folder] = wanted.get(folder, 0) + 1
        folders: dict[str, dict[str, int] | None] = {}  # None: ask file by file
        out: list[int | None] = []
        for relative in relatives:
            target = self.path(relative)
            folder, name = posixpath.split(target)
            if folder not in folders:
                folders[folder] = (None if wanted[folder] == 1 or folder in self._big_folders
                                   else self._listing(folder, wanted[folder]))
            listing = folders[folder]
            out.append(self.size(relative) if listing is None else listing.get(name))
        return out

    def _listing(self, folder: str, wanted: int) -> dict[str, int]:
        """name -> size of the files in an object-store folder. One that holds far more than
        the `wanted` names is remembered, and asked file by file from then on."""
        try:
            entries = self.fs.ls(folder, detail=True, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            entries = []
        if len(entries) > 4 * wanted + 1000:
            self._big_folders.add(folder)
        return {posixpath.basename(e["name"].rstrip("/")): int(e["size"])
                for e in entries if e.get("type") == "file" and e.get("size") is not None}

    def existing(self, relatives: Iterable[str]) -> set[str]:
        """Which of these paths exist under OUT as anything (file, folder, link)."""
        found = set()
        for relative in relatives:
            target = self.path(relative)
            if self.local:
                if os.path.lexists(target):
                    found.add(relative)
            elif self.fs.exists(target):
                found.add(relative)
        return found

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

    def _walk(self, folder: str) -> Iterator[str]:
        """Full paths of the entries below OUT/folder that are not folders: files, and links
        (listed, never followed). Temporaries are left out."""
        base = self.path(folder)
        if not self.local:
            if self.fs.exists(base):
                yield from (p for p in self.fs.find(base)
                            if not TMP_NAME.match(posixpath.basename(p)))
            return
        if _is_link(base) or not os.path.isdir(base):
            if os.path.lexists(base) and folder != ".":
                yield base
            return
        for dirpath, dirnames, filenames in os.walk(base):  # followlinks=False: links are
            for name in dirnames:  # listed in dirnames, not entered: report them as entries
                if _is_link(f"{dirpath}/{name}"):
                    yield f"{dirpath}/{name}"
            for name in filenames:
                if not TMP_NAME.match(name):
                    yield f"{dirpath}/{name}"

    def files_under(self, folders: Iterable[str]) -> set[str]:
        """Relative paths of the files (and links) below OUT/<folder> for each folder, without
        following links; temporaries excluded."""
        return set(self.walk_files(folders))

    def walk_files(self, folders: Iterable[str]) -> Iterator[str]:
        """files_under's paths as they are found, none held (a tree of 30 million files)."""
        return (posixpath.relpath(path, self.root)
                for folder in folders for path in self._walk(folder))

    def remove(self, relative_paths: Iterable[str],
               protect: Protected | Iterable[str] = ()) -> int:
        """Delete files fanout wrote that no longer belong, and local folders left empty.

        Only regular files are deleted, never through or at a symbolic link, never one of
        `protect` (the catalog's masters). Returns how many files were deleted.
        """
        keep = protect if isinstance(protect, Protected) else Protected(protect)
        count = 0
        for relative in relative_paths:
            target = self.path(relative)
            if self.unsafe(relative) is not None:
                continue
            if self.local:  # a master may be named by another spelling of its path
                if self.size(relative) is None or keep.holds(target):
                    continue
                os.unlink(target)
                self._prune(Path(target).parent)
            else:
                if keep.holds(target, local=False) or not self.fs.isfile(target):
                    continue
                self.fs.rm_file(target)
            count += 1
        return count

    def _prune(self, folder: Path) -> None:
        """Remove local folders a deletion left empty, up to (not including) OUT."""
        while str(folder) != self.root and str(folder).startswith(self.root + "/"):
            try:
                folder.rmdir()  # only ever an empty folder
            except OSError:
                return
            folder = folder.parent

    def sweep_temporaries(self, beside: Iterable[str]) -> int:
        """Remove temporary files a killed run left behind (local OUT only; PUTs leave none).

        Only fanout's own temporary names, only regular files, never in or below a link.
        `beside`: the paths a run wrote or may have written (OUT's own files among them); a
        temporary is made beside its target, so only their folders are looked at: a million
        masters' folders are not walked on a night that wrote to none of them."""
        if not self.local:
            return 0
        count = 0
        for folder in sorted({posixpath.dirname(p) for p in beside}):
            if folder and self.unsafe(folder) is not None:
                continue
            where = self.path(folder) if folder else self.root
            try:
                names = [e.name for e in os.scandir(where) if e.is_file(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                if TMP_NAME.match(name):
                    os.unlink(f"{where}/{name}")
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
    try:
        fh = open(path, "a+")  # noqa: SIM115 (held for the whole block)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write to --out: {exc.strerror or exc}") from None
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
