"""Checks a person would make on an output: decode it and look."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyvips


def read(out: Path | str) -> pa.Table:
    """OUT's manifest as a user reads it: the Parquet file, with pyarrow (and fsspec for an
    object-store OUT), not through fanout."""
    if "://" in str(out):
        import fsspec

        with fsspec.open(f"{str(out).rstrip('/')}/manifest.parquet", "rb") as fh:
            return pq.read_table(fh)
    return pq.read_table(Path(out) / "manifest.parquet")


LOADERS = {"jpeg": "jpegload", "webp": "webpload", "avif": "heifload", "png": "pngload"}


def load(path: Path | str) -> pyvips.Image:
    return pyvips.Image.new_from_file(str(path), fail_on="warning")


def pixels(image: pyvips.Image) -> np.ndarray:
    return image.numpy().reshape(image.height, image.width, image.bands)


def mean_colour(image: pyvips.Image, x: float, y: float, size: int = 6) -> np.ndarray:
    """Average colour of a small patch centred at (x, y) given as fractions of the size."""
    px, py = int(x * image.width), int(y * image.height)
    half = size // 2
    patch = image.crop(max(0, px - half), max(0, py - half), size, size)
    return pixels(patch)[..., :3].reshape(-1, 3).mean(axis=0)


def distance(a, b) -> float:  # noqa: ANN001
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).max())


def content_box(image: pyvips.Image, threshold: int = 24) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of pixels that differ from white by more than threshold."""
    rgb = pixels(image.flatten(background=[255, 255, 255]) if image.hasalpha() else image)
    mask = (255 - rgb[..., :3].astype(int)).max(axis=2) > threshold
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def output_files(out: Path) -> set[str]:
    """Every file under OUT but the manifest, the run history, the stored configuration and
    the writer's lock."""
    return {
        p.relative_to(out).as_posix() for p in out.rglob("*")
        if p.is_file() and p.name not in ("manifest.parquet", ".fanout.lock")
        and p.relative_to(out).parts[0] not in ("_runs", "_config")
    }


def assert_consistent(out: Path) -> None:
    """The manifest matches the disk exactly: every recorded file exists with its sha256, no
    file is unrecorded, no temporary is left."""
    rows = read(out).to_pylist()
    recorded = {r["path"]: r["sha256"] for r in rows if r["status"] in ("ok", "skipped", "kept")}
    for path, digest in recorded.items():
        assert hashlib.sha256((out / path).read_bytes()).hexdigest() == digest, path
    on_disk = output_files(out)
    assert on_disk == set(recorded)


def channel_toml(name: str, outputs: dict[str, str]) -> str:
    """A channel file: one output per (output name, preset) pair, default naming."""
    blocks = [f'[[outputs]]\nname = "{o}"\npreset = "{p}"' for o, p in outputs.items()]
    return "\n".join([f'name = "{name}"', *blocks]) + "\n"


def write_config(root: Path, kind: str, name: str, text: str) -> Path:
    """root/<kind>/<name>.toml with `text` (kind: channels or presets); returns its path."""
    folder = root / kind
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def config_folder(root: Path, presets: dict[str, str], channels: dict[str, str]) -> Path:
    """A config folder at `root` with these presets and channels files (name -> TOML text)."""
    for kind, files in (("presets", presets), ("channels", channels)):
        for name, text in files.items():
            write_config(root, kind, name, text)
    return root
