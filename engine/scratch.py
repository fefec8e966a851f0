"""Local scratch folders (the run's row spool, a video's encodes, a manifest being written),
named so that those of a process killed with -9 can be found and removed by the next run."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NAME = re.compile(r"^fanout-[a-z]+-(\d+)-")


@contextmanager
def scratch(kind: str) -> Iterator[Path]:
    """A fresh folder in the system's temporary folder, removed when the block ends."""
    with tempfile.TemporaryDirectory(prefix=f"fanout-{kind}-{os.getpid()}-") as folder:
        yield Path(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep() -> int:
    """Remove the scratch folders of fanout processes that are gone; returns how many."""
    count = 0
    root = Path(tempfile.gettempdir())
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for entry in entries:
        match = NAME.match(entry.name)
        if match and entry.is_dir(follow_symlinks=False) and not _alive(int(match[1])):
            shutil.rmtree(entry.path, ignore_errors=True)
            count += 1
    return count
