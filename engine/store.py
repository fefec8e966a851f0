"""Where outputs go, and how they appear: never outside OUT, always whole (atomic rename)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


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
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
