"""One master, end to end: read, hash, decode once, render every recipe, write, describe.

This is the unit of scheduling (schedule.py runs one call per master) and knows nothing of
Dask. It never raises for a bad master: every problem becomes `failed` rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import fsspec
import pyvips

from .errors import MasterError
from .image.render import Rendered, render_all
from .image.rules import violations
from .plan import Derivative, MasterPlan
from .spec.models import ImagePreset, Preset, Rules
from .store import Store


@dataclass(frozen=True)
class JobSettings:
    out: str
    run_id: str
    max_pixels: int
    rules: dict[tuple[str, str], Rules] = field(default_factory=dict)  # (channel, output) -> rules


def _base_row(mp: MasterPlan, run_id: str, sha: str | None) -> dict:
    m = mp.master
    return {
        "run_id": run_id, "master_id": m.id, "master_path": m.path, "master_sha256": sha,
        "master_kind": m.kind, "product": m.product, "position": m.position, "role": m.role,
    }


def _failed(base: dict, d: Derivative | None, error: str) -> dict:
    row = dict(base, status="failed", error=error)
    if d is not None:
        row.update(channel=d.channel, output=d.output, preset=d.preset,
                   recipe_hash=d.recipe_hash, format=d.format)
    return row


def _read(path: str) -> bytes:
    try:
        with fsspec.open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise MasterError("file not found") from None
    except IsADirectoryError:
        raise MasterError("is a folder, not a file") from None
    except OSError as exc:
        raise MasterError(f"cannot read: {exc.strerror or exc}") from None


def _stored_sha256(store: Store, relative: str) -> str | None:
    data = store.read(relative)
    return None if data is None else hashlib.sha256(data).hexdigest()


def _unchanged(prev: dict | None, d: Derivative, master_sha: str, store: Store) -> bool:
    """A previous output still stands: same master bytes, same recipe (preset and engine),
    same place, and the file on disk is the one recorded."""
    return (
        prev is not None
        and prev["status"] in ("ok", "skipped")
        and prev["master_sha256"] == master_sha
        and prev["recipe_hash"] == d.recipe_hash
        and prev["path"] == d.path
        and d.path is not None
        and _stored_sha256(store, d.path) == prev["sha256"]
    )


def _broken_rules(rules: Rules | None, result: Rendered) -> list[str]:
    """The channel's rules, checked on the encoded file before it is published."""
    if rules is None:
        return []
    return violations(rules, result.format, result.width, result.height, len(result.data),
                      lambda: pyvips.Image.new_from_buffer(result.data, ""))


def fail_master(mp: MasterPlan, settings: JobSettings, error: str,
                base: dict | None = None) -> list[dict]:
    """A `failed` row for every derivative of the master (one row if it has none)."""
    base = base or _base_row(mp, settings.run_id, None)
    message = f"{mp.master.path}: {error}"
    if not mp.derivatives:
        return [_failed(base, None, message)]
    return [_failed(base, d, message) for d in mp.derivatives]


def render_master(mp: MasterPlan, presets: dict[str, Preset], settings: JobSettings) -> list[dict]:
    """Every manifest row for one master. Failures are rows, never exceptions.

    Derivatives whose previous output still stands are recorded `skipped` with the previous
    file facts; the master is decoded only if something is left to render.
    """
    master = mp.master
    base = _base_row(mp, settings.run_id, None)

    def fail_all(error: str) -> list[dict]:
        return fail_master(mp, settings, error, base)

    if master.errors:
        return fail_all(master.error or "")
    try:
        data = _read(master.path)
    except MasterError as exc:
        return fail_all(str(exc))
    base["master_sha256"] = hashlib.sha256(data).hexdigest()
    if master.kind == "video":
        return fail_all("video masters are not supported yet (no video pipeline in this version)")
    if not mp.derivatives:
        return []

    store = Store(settings.out)
    sha = base["master_sha256"]
    skipped = {
        d: dict(mp.previous[(d.channel, d.output)], **base, status="skipped", error=None,
                render_ms=0.0, decode_ms=None)
        for d in mp.derivatives
        if d.error is None and _unchanged(mp.previous.get((d.channel, d.output)), d, sha, store)
    }
    todo = [d for d in mp.derivatives if d not in skipped]
    recipes = {d.recipe_hash: d.preset for d in todo if d.error is None}
    if not recipes:
        return [skipped.get(d) or _failed(base, d, d.error or "") for d in mp.derivatives]
    image_presets: dict[str, ImagePreset] = {h: presets[name] for h, name in recipes.items()}
    try:
        results, decode_ms = render_all(data, image_presets, settings.max_pixels)
    except MasterError as exc:
        return fail_all(str(exc))

    digests: dict[str, str] = {}
    rows = []
    for d in mp.derivatives:
        if d in skipped:
            rows.append(skipped[d])
            continue
        if d.error is not None:
            rows.append(_failed(base, d, d.error))
            continue
        result = results[d.recipe_hash]
        if isinstance(result, MasterError):
            rows.append(_failed(base, d, f"{master.path}: {result}"))
            continue
        broken = _broken_rules(settings.rules.get((d.channel, d.output)), result)
        if broken:
            rows.append(_failed(base, d, f"breaks {d.channel} rules: {'; '.join(broken)}"))
            continue
        try:
            assert d.path is not None
            store.write(d.path, result.data)
        except (OSError, ValueError) as exc:
            rows.append(_failed(base, d, f"cannot write {d.path}: {exc}"))
            continue
        rows.append(dict(
            base, channel=d.channel, output=d.output, preset=d.preset, path=d.path,
            status="ok", error=None, format=result.format, width=result.width,
            height=result.height, bytes=len(result.data),
            sha256=digests.setdefault(d.recipe_hash, hashlib.sha256(result.data).hexdigest()),
            quality=result.quality,
            recipe_hash=d.recipe_hash, render_ms=result.render_ms, decode_ms=decode_ms,
        ))
    return rows
