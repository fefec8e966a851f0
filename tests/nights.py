"""Scripted nights against a real `fanout` process, and what must hold after every one of them.

A `Night` is a scratch world in one folder: masters, a CSV listing, a small config (channels
`shop` and `mail` with small JPEG presets, so renders take a fraction of a second), OUT, a
sibling folder nobody may touch, and a private TMPDIR for the `fanout` subprocess. `night()`
runs one `fanout render` and then asserts the four invariants of the fault suite:

  (a) nothing published was lost: every file served before the night is still there with the
      same bytes, or was replaced by a newer good render (its manifest row is `ok` with the new
      sha256) -- `snapshot()` / `assert_nothing_lost()`;
  (b) nothing outside OUT changed (every file, link and folder under the world's root except
      OUT and TMPDIR, the masters and the listing included);
  (c) `fanout check OUT` agrees with the disk (exit 0 unless the scenario leaves a known
      problem), and so does our own reading: every published row's file exists with its
      sha256, no file is unrecorded but the ones the scenario planted, no temporary is left;
  (d) no "Traceback" in the output of any fanout command.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import problem_images as P
import pyarrow.parquet as pq

FANOUT = Path(sys.executable).parent / "fanout"
PUBLISHED = ("ok", "skipped", "kept")  # a file is served
BOOKKEEPING_FILES = {"manifest.parquet", ".fanout.lock", "report.html"}
BOOKKEEPING_DIRS = {"_runs", "_config"}
TEMPORARY = re.compile(r"^\..+\.tmp$")  # fanout's temporaries: .NAME.<hex>.tmp
RUN_FILE = re.compile(r"^[^.]+\.parquet$")  # a committed history file: <run_id>.parquet

PRESETS = """\
[tiny-thumb]
resize = { width = 160, fit = "fit" }
format = "jpeg"
quality = 80

[tiny-card]
resize = { width = 240, fit = "fit" }
format = "jpeg"
quality = 80
"""

CHANNELS = {
    "shop": 'name = "shop"\n[[outputs]]\nname = "thumb"\npreset = "tiny-thumb"\n'
            '[[outputs]]\nname = "card"\npreset = "tiny-card"\n',
    "mail": 'name = "mail"\n[[outputs]]\nname = "small"\npreset = "tiny-thumb"\n',
}


def write_config(folder: Path, channels: dict[str, str] | None = None) -> Path:
    (folder / "presets").mkdir(parents=True, exist_ok=True)
    (folder / "channels").mkdir(parents=True, exist_ok=True)
    (folder / "presets" / "tiny.toml").write_text(PRESETS)
    for name, text in (channels or CHANNELS).items():
        (folder / "channels" / f"{name}.toml").write_text(text)
    return folder


def write_master(path: Path, variant: int = 0, index: int = 0) -> Path:
    """A ~400x300 JPEG scene; another `variant` gives other bytes (and pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = P.scene(400 + 8 * (index % 10), 300)
    if variant % 2:
        image = image.flipver()
    if variant >= 2:
        image = image.fliphor()
    image.jpegsave(str(path), Q=85 + variant)
    return path


def write_listing(path: Path, entries: dict[str, str]) -> Path:
    """A CSV listing: id -> path (relative to the listing)."""
    lines = ["id,path"] + [f"{i},{p}" for i, p in entries.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- reading OUT


def rows(out: Path) -> list[dict]:
    """The manifest's rows, read with pyarrow directly (not through the engine)."""
    return pq.read_table(out / "manifest.parquet").to_pylist()


def by_key(out: Path) -> dict[tuple[str, str, str], dict]:
    return {(r["master_id"], r["channel"], r["output"]): r for r in rows(out)}


def run_ids(out: Path) -> list[str]:
    """Committed runs in OUT/_runs, oldest first."""
    folder = out / "_runs"
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".parquet")] for p in folder.iterdir()
                  if RUN_FILE.match(p.name))


def history(out: Path, run_id: str) -> list[dict]:
    return pq.read_table(out / "_runs" / f"{run_id}.parquet").to_pylist()


def entries(out: Path) -> set[str]:
    """Every file and link under OUT (links listed, never followed), bookkeeping and
    temporaries left out."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(out):
        rel_dir = Path(dirpath).relative_to(out)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in BOOKKEEPING_DIRS]
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                found.add((rel_dir / name).as_posix())
        for name in filenames:
            if rel_dir == Path(".") and name in BOOKKEEPING_FILES:
                continue
            if TEMPORARY.match(name):
                continue
            found.add((rel_dir / name).as_posix())
    return found


def temporaries(out: Path) -> list[str]:
    return [str(Path(d) / n) for d, _, names in os.walk(out) for n in names
            if TEMPORARY.match(n)]


def snapshot(out: Path) -> dict[str, str]:
    """{relpath: sha256 on disk} of the files the store serves (rows ok, skipped or kept)."""
    if not (out / "manifest.parquet").exists():
        return {}
    found = {}
    for row in rows(out):
        if row["status"] in PUBLISHED and row["path"] and (out / row["path"]).is_file():
            found[row["path"]] = sha(out / row["path"])
    return found


def assert_nothing_lost(before: dict[str, str], out: Path, gone: Iterable[str] = ()) -> None:
    """Every file served before is still there with the same bytes, or was replaced by a newer
    good render (its row is `ok` with the new sha256). `gone`: paths the night was meant to
    remove (a master that left the catalog), which must indeed be gone."""
    gone = set(gone)
    current = {r["path"]: r for r in rows(out) if r["path"]} if (
        out / "manifest.parquet").exists() else {}
    lost = []
    for path, digest in sorted(before.items()):
        target = out / path
        if path in gone:
            if os.path.lexists(target):
                lost.append(f"{path}: should have been removed, is still there")
            continue
        if not target.is_file():
            lost.append(f"{path}: missing")
            continue
        now = sha(target)
        if now == digest:
            continue
        row = current.get(path)
        if not (row and row["status"] == "ok" and row["sha256"] == now):
            lost.append(f"{path}: bytes changed; row {row and (row['status'], row['sha256'])}")
    assert not lost, "published files lost:\n" + "\n".join(lost)


def assert_matches_disk(out: Path, foreign: Iterable[str] = ()) -> None:
    """Every published row's file exists (a regular file) with its sha256; no file is
    unrecorded but `foreign` ones; no temporary is left."""
    problems = []
    recorded = set()
    for row in rows(out):
        if row["status"] in PUBLISHED:
            recorded.add(row["path"])
            target = out / row["path"]
            if target.is_symlink() or not target.is_file():
                problems.append(f"{row['path']}: {row['status']} row, no regular file")
            elif sha(target) != row["sha256"]:
                problems.append(f"{row['path']}: {row['status']} row, sha256 differs")
        elif row["status"] == "failed":
            if row["path"] is not None:
                problems.append(f"failed row with a path: {row['path']}")
        else:
            problems.append(f"unexpected status {row['status']!r} in the manifest")
    extra = entries(out) - recorded - set(foreign)
    problems += [f"{p}: on disk, not recorded" for p in sorted(extra)]
    problems += [f"{p}: temporary left" for p in temporaries(out)]
    assert not problems, "manifest and disk disagree:\n" + "\n".join(problems)


# ---------------------------------------------------------------- outside OUT


def tree(root: Path, exclude: Iterable[Path] = ()) -> dict[str, tuple]:
    """Every entry under root (not following links), with what it is: file bytes' sha256, link
    target, folder, FIFO; `exclude` folders are skipped whole."""
    skip = {os.path.abspath(p) for p in exclude}
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if os.path.abspath(full) in skip:
                continue
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                found[rel] = ("link", os.readlink(full))
            else:
                found[rel] = ("dir", stat.S_IMODE(os.lstat(full).st_mode))
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(full))
            elif stat.S_ISFIFO(info.st_mode):
                found[rel] = ("fifo",)
            elif not stat.S_ISREG(info.st_mode):
                found[rel] = ("special", info.st_mode)
            else:
                try:
                    found[rel] = ("file", sha(Path(full)), stat.S_IMODE(info.st_mode))
                except PermissionError:
                    found[rel] = ("unreadable", info.st_size, stat.S_IMODE(info.st_mode))
    return found


def assert_same_tree(before: dict, after: dict, where: str) -> None:
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"changed outside OUT ({where}):\n" + "\n".join(
        f"{k}: {before.get(k)} -> {after.get(k)}" for k in changed)


# ---------------------------------------------------------------- running fanout


@dataclass
class Run:
    args: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def lines(self) -> list[str]:
        return self.text.splitlines()

    def __str__(self) -> str:
        return (f"$ fanout {' '.join(self.args)}\nexit {self.rc}\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}")


def assert_no_traceback(run: Run) -> None:
    assert "Traceback" not in run.text, f"a traceback:\n{run}"


def section(text: str, title: str) -> list[str]:
    """The lines `fanout diff` prints under `title:` (up to the next heading)."""
    lines = text.splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        if line and not line[0].isspace():  # a heading: "failed: 3", "unchanged ..."
            inside = line.startswith(f"{title}:")
            continue
        if inside and line.strip():
            out.append(line.strip())
    return out


class Night:
    """One scratch world under `root` and the commands a night runs in it."""

    def __init__(self, root: Path, ids: Iterable[str] = ("p0", "p1", "p2", "p3"),
                 channels: Iterable[str] = ("shop",), config: Path | None | bool = True,
                 listing: bool = True, out: Path | None = None) -> None:
        self.root = root
        self.masters = root / "masters"
        self.masters.mkdir(parents=True, exist_ok=True)
        self.listing_path = root / "catalog.csv"
        self.out = out or root / "out"
        self.tmpdir = root / "tmp"
        self.tmpdir.mkdir(exist_ok=True)
        self.logs = root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.sibling = root / "sibling"  # a folder next to OUT that nobody may touch
        self.sibling.mkdir(exist_ok=True)
        (self.sibling / "keep.txt").write_text("not fanout's\n")
        write_master(self.sibling / "photo.jpg", variant=3)
        if config is True:
            self.config: Path | None = write_config(root / "cfg")
        else:
            self.config = config or None
        self.channels = list(channels)
        self.ids: dict[str, str] = {}
        for n, i in enumerate(ids):
            self.add(i, index=n)
        self.use_listing = listing
        if listing:
            self.write_listing()
        self.exclude_outside: list[Path] = []  # more folders (besides OUT and TMPDIR) to skip

    # the catalog
    def add(self, master_id: str, variant: int = 0, index: int | None = None) -> Path:
        path = write_master(self.masters / f"{master_id}.jpg", variant,
                            len(self.ids) if index is None else index)
        self.ids[master_id] = f"masters/{master_id}.jpg"
        return path

    def write_listing(self, ids: Iterable[str] | None = None) -> Path:
        chosen = self.ids if ids is None else {i: self.ids.get(i, f"masters/{i}.jpg")
                                              for i in ids}
        return write_listing(self.listing_path, chosen)

    @property
    def catalog(self) -> Path:
        return self.listing_path if self.use_listing else self.masters

    # running
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(TMPDIR=str(self.tmpdir), COLUMNS="240", NO_COLOR="1")
        return env

    def fanout(self, *args: str, timeout: float = 120) -> Run:
        argv = [str(a) for a in args]
        try:
            done = subprocess.run([str(FANOUT), *argv], capture_output=True, text=True,
                                  env=self.env(), timeout=timeout, cwd=self.root)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"fanout {' '.join(argv)} did not finish in {timeout} s "
                                 f"(hung?)\n{exc.stdout}\n{exc.stderr}") from None
        run = Run(argv, done.returncode, done.stdout, done.stderr)
        assert_no_traceback(run)
        return run

    def config_args(self, config: bool = True) -> list[str]:
        return ["--config-dir", str(self.config)] if (config and self.config) else []

    def channel_args(self, channels: Iterable[str] | None = None) -> list[str]:
        return [a for c in (self.channels if channels is None else channels)
                for a in ("--channel", c)]

    def render_args(self, *extra: str, catalog: Path | str | None = None, config: bool = True,
                    channels: Iterable[str] | None = None) -> list[str]:
        return ["render", str(catalog or self.catalog), "--out", str(self.out), "--no-progress",
                *self.channel_args(channels), *self.config_args(config), *extra]

    def render(self, *extra: str, timeout: float = 120, **how) -> Run:  # noqa: ANN003
        return self.fanout(*self.render_args(*extra, **how), timeout=timeout)

    def check(self, config: bool = True) -> Run:
        return self.fanout("check", str(self.out), *self.config_args(config))

    def diff(self) -> Run:
        return self.fanout("diff", str(self.out))

    def start(self, *extra: str, **how) -> subprocess.Popen:  # noqa: ANN003
        """A render in the background (for killing); its output goes to logs/."""
        n = len(list(self.logs.iterdir()))
        self._log = (self.logs / f"{n}.out", self.logs / f"{n}.err")
        return subprocess.Popen([str(FANOUT), *self.render_args(*extra, **how)],
                                stdout=open(self._log[0], "w"), stderr=open(self._log[1], "w"),
                                env=self.env(), cwd=self.root, preexec_fn=as_foreground)

    def log(self) -> Run:
        return Run(["(background render)"], -999, self._log[0].read_text(),
                   self._log[1].read_text())

    # outside OUT
    def outside(self) -> dict[str, tuple]:
        return tree(self.root, [self.out, self.tmpdir, self.logs, *self.exclude_outside])

    def leftover_tmp(self) -> list[str]:
        return sorted(p.name for p in self.tmpdir.iterdir() if p.name.startswith("fanout-"))

    # a night and its invariants
    def night(self, *extra: str, rc: int = 0, check_rc: int | None = 0,
              gone: Iterable[str] = (), foreign: Iterable[str] = (), timeout: float = 120,
              before: dict[str, str] | None = None, **how) -> Run:  # noqa: ANN003
        """Run `fanout render` once and assert (a)-(d). `rc`: the exit code the scenario
        expects; `check_rc`: what `fanout check` should exit with (None: don't run it);
        `gone`: published paths the night must remove; `foreign`: files under OUT that
        fanout did not write (and must keep)."""
        before = snapshot(self.out) if before is None else before
        outside = self.outside()
        run = self.render(*extra, timeout=timeout, **how)
        assert run.rc == rc, f"expected exit {rc}\n{run}"
        self.last_check = self.verify(before, outside, gone=gone, foreign=foreign,
                                      check_rc=check_rc)
        return run

    def verify(self, before: dict[str, str], outside: dict[str, tuple], *,
               gone: Iterable[str] = (), foreign: Iterable[str] = (),
               check_rc: int | None = 0, config: bool = True) -> Run | None:
        assert_same_tree(outside, self.outside(), "after the night")
        if (self.out / "manifest.parquet").exists():
            assert_nothing_lost(before, self.out, gone)
            assert_matches_disk(self.out, foreign)
        else:
            assert not before, "manifest gone"
        assert not self.leftover_tmp(), f"temporary folders left in TMPDIR: {self.leftover_tmp()}"
        if check_rc is None:
            return None
        checked = self.check(config)
        assert checked.rc == check_rc, f"fanout check expected exit {check_rc}\n{checked}"
        return checked


def as_foreground() -> None:
    """In a child, before it runs: SIGINT at its default, as for a command a user runs in a
    terminal. A shell starts a background job (`pytest ... &`, CI's runner) with SIGINT
    ignored, which the child inherits, and fanout rightly leaves an ignored SIGINT ignored: a
    test of Ctrl-C would then watch the render finish."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(what: Callable[[], bool], proc: subprocess.Popen | None = None,
             deadline_s: float = 60, poll_s: float = 0.002) -> bool:
    """Poll until `what()` holds; False when the process ended first or the deadline passed."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if what():
            return True
        if proc is not None and proc.poll() is not None:
            return what()
        time.sleep(poll_s)
    return False


def stop(proc: subprocess.Popen, sig: int, timeout: float = 60) -> int:
    """Send `sig` and wait for the process to end; SIGKILL it (and fail) if it won't."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"fanout did not stop within {timeout} s of "
                             f"{signal.Signals(sig).name}") from None
