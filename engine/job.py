"""One master, end to end: read, hash, decode once, render every recipe, write, describe.

This is the unit of scheduling (schedule.py runs one call per master) and knows nothing of
Dask. It never raises for a bad master: every problem becomes `failed` rows.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyvips

from .errors import MasterError, NotApplicable
from .geometry import Box, Framing
from .history import as_kept, still_served
from .image.render import Rendered, from_image, render_all, render_decoded
from .masters import DEFAULT_MAX_MASTER_BYTES, hash_master, open_master, read_master
from .plan import Derivative, MasterPlan
from .rows import Row, Status
from .rules import video_violations, violations
from .scratch import scratch
from .spec.models import ImagePreset, Preset, Rules, VideoPreset
from .store import Store, sha256_of
from .video.branch import VideoRendered
from .video.decode_pass import render_video
from .video.probe import DEFAULT_MAX_VIDEO_PIXELS, DEFAULT_MAX_VIDEO_S


@dataclass(frozen=True)
class JobSettings:
    out: str
    run_id: str
    max_pixels: int
    max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS
    max_video_s: float = DEFAULT_MAX_VIDEO_S
    rules: dict[tuple[str, str], Rules] = field(default_factory=dict)  # (channel, output) -> rules
    force: bool = False  # render everything, even what a previous run already made
    max_master_bytes: int = DEFAULT_MAX_MASTER_BYTES


def _base_row(mp: MasterPlan, run_id: str, sha: str | None) -> Row:
    """The master's columns, which every row of the master shares."""
    m = mp.master
    return Row(run_id=run_id, master_id=m.id, master_path=m.path, master_sha256=sha,
               master_kind=m.kind, product=m.product, position=m.position, role=m.role,
               alt=m.alt, title=m.title, tags=list(m.tags) or None, extra=m.extra or None)


def _with_master(row: Row, base: Row) -> Row:
    """An earlier row of this master, with tonight's master columns."""
    return row.replace(run_id=base.run_id, master_id=base.master_id,
                       master_path=base.master_path, master_sha256=base.master_sha256,
                       master_kind=base.master_kind, product=base.product,
                       position=base.position, role=base.role, alt=base.alt,
                       title=base.title, tags=base.tags, extra=base.extra)


def _failed(base: Row, d: Derivative | None, error: str) -> Row:
    row = base.replace(status=Status.FAILED.value, error=error)
    if d is not None:
        row = row.replace(channel=d.channel, output=d.output, preset=d.preset,
                          recipe_hash=d.recipe_hash, format=d.format)
    return row


def _still_not_applicable(prev: Row | None, d: Derivative, master_sha: str) -> bool:
    """An `n/a` row of the same master bytes and recipe: the answer cannot have changed."""
    return (prev is not None and prev.status == Status.NOT_APPLICABLE
            and prev.master_sha256 == master_sha and prev.recipe_hash == d.recipe_hash)


def _not_applicable(base: Row, d: Derivative, reason: str) -> Row:
    return base.replace(channel=d.channel, output=d.output, preset=d.preset,
                        recipe_hash=d.recipe_hash, format=d.format, path=None,
                        status=Status.NOT_APPLICABLE.value, error=reason)


def _unchanged(prev: Row | None, d: Derivative, master_sha: str, store: Store) -> bool:
    """A previous output still stands: same master bytes, same recipe (preset and engine),
    same place, and the file on disk is the one recorded."""
    return (
        prev is not None
        and prev.status in (Status.OK, Status.SKIPPED)
        and prev.master_sha256 == master_sha
        and prev.recipe_hash == d.recipe_hash
        and prev.path == d.path
        and d.path is not None
        and store.sha256(d.path) == prev.sha256
    )


def _broken_rules(rules: Rules | None, result: Rendered | VideoRendered) -> list[str]:
    """The channel's rules, checked on the encoded file before it is published.

    Pixel rules look at the border and the content box: the file is decoded once, into memory
    (read lazily, each of those looks would decode it again: 5x the cost, measured).
    """
    if rules is None:
        return []
    if isinstance(result, VideoRendered):
        f = result.facts
        return (violations(rules, f.format, f.width, f.height, result.path.stat().st_size, None)
                + video_violations(rules, f))
    return violations(rules, result.format, result.width, result.height, len(result.data),
                      lambda: pyvips.Image.new_from_buffer(result.data, "").copy_memory())


def _digest(result: Rendered | VideoRendered) -> tuple[str, int]:
    """(sha256, bytes) of an output's encoded file."""
    if isinstance(result, VideoRendered):
        with result.path.open("rb") as fh:
            return sha256_of(fh), result.path.stat().st_size
    return hashlib.sha256(result.data).hexdigest(), len(result.data)


def _publish(store: Store, relative: str, result: Rendered | VideoRendered) -> None:
    if isinstance(result, VideoRendered):
        store.write_file(relative, result.path)
    else:
        store.write(relative, result.data)


def _facts(result: Rendered | VideoRendered) -> dict[str, object]:
    """The columns that describe an output's file, and its lineage (where its pixels came
    from: the master's size, the region shown, the trim box, the scale, the crop, the encoder)."""
    if isinstance(result, VideoRendered):
        f = result.facts
        region = result.region
        return {"format": f.format, "width": f.width, "height": f.height, "quality": None,
                "duration_s": round(f.duration_s, 4), "video_codec": f.video_codec,
                "audio_codec": f.audio_codec, "bitrate": f.bitrate,
                **_lineage(result.source, region, None, result.scale, result.crop_by,
                           result.encoder)}
    facts: dict[str, object] = {"format": result.format, "width": result.width,
                                "height": result.height, "quality": result.quality,
                                "score": result.score,  # SSIMULACRA2 ("auto" only)
                                "breakpoints": (None if result.breakpoints is None
                                                else list(result.breakpoints))}
    lineage = result.lineage
    if lineage is not None:
        facts.update(_lineage(result.source, lineage.shown, lineage.trim, lineage.scale,
                              lineage.crop, result.encoder))
    return facts


def _lineage(source: tuple[int, int] | None, region: Box | None, trim: Box | None,
             scale: float | None, crop_by: str | None, encoder: str | None) -> dict[str, object]:
    def box(b: Box | None) -> tuple[int | None, ...]:
        return (None,) * 4 if b is None else (b.left, b.top, b.width, b.height)

    (sw, sh) = source or (None, None)
    (rx, ry, rw, rh), (tx, ty, tw, th) = box(region), box(trim)
    return {"source_width": sw, "source_height": sh, "region_x": rx, "region_y": ry,
            "region_w": rw, "region_h": rh, "trim_x": tx, "trim_y": ty, "trim_w": tw,
            "trim_h": th, "scale": None if scale is None else round(scale, 6),
            "crop_by": crop_by, "encoder": encoder}


def _source_problem(rules: Rules | None, result: Rendered | VideoRendered,
                    d: Derivative) -> str | None:
    """The channel's minimum source size (min_source_long_side), checked on the master."""
    if rules is None or rules.min_source_long_side is None or result.source is None:
        return None
    w, h = result.source
    if max(w, h) >= rules.min_source_long_side:
        return None
    out = (result.facts.width, result.facts.height) if isinstance(result, VideoRendered) else (
        result.width, result.height)
    return (f"the master is {w}x{h}, below {d.channel}'s min_source_long_side of "
            f"{rules.min_source_long_side} px: it would upscale {w}x{h} to {out[0]}x{out[1]}")


def _render_video_master(
    path: str, presets: dict[str, Preset], settings: JobSettings, workdir: Path,
    framings: dict[str, Framing] | None = None,
) -> tuple[dict[str, Rendered | VideoRendered | MasterError], float]:
    """One decode pass for the video recipes and the stills; stills through the image pipeline."""
    videos = {h: p for h, p in presets.items() if isinstance(p, VideoPreset)}
    posters = {h: p for h, p in presets.items() if isinstance(p, ImagePreset)}
    frames = list(dict.fromkeys(p.frame for p in posters.values() if p.frame is not None))
    with open_master(path) as fh:
        done = render_video(fh, videos, frames, workdir, settings.max_video_pixels,
                            settings.max_video_s, framings)
    results: dict[str, Rendered | VideoRendered | MasterError] = dict(done.results)
    for frame in frames:
        wanted = {h: p for h, p in posters.items() if p.frame == frame}
        results.update(render_decoded(from_image(done.stills[frame]), wanted, framings))
    return results, done.decode_ms


def fail_master(mp: MasterPlan, settings: JobSettings, error: str) -> list[Row]:
    """A `failed` row for every derivative of the master (one row if it has none); a
    derivative whose earlier file still stands keeps it (`kept`). For the scheduler, when a
    master's task itself died."""
    return keep_last_good(_failed_all(mp, _base_row(mp, settings.run_id, None), error),
                          mp, settings)


def _failed_all(mp: MasterPlan, base: Row, error: str) -> list[Row]:
    message = f"{mp.master.path}: {error}"
    if not mp.derivatives:
        return [_failed(base, None, message)]
    return [_failed(base, d, message) for d in mp.derivatives]


def keep_last_good(rows: list[Row], mp: MasterPlan, settings: JobSettings) -> list[Row]:
    """Failed rows whose derivative had a published file become `kept` rows: the file stays
    served, with its facts, and the row says why it was not refreshed and since when.

    A failure tonight (master unreadable, decode or encoder error, a broken rule) must never
    take down what the store serves; only leaving the catalog or the channel removes a file.
    """
    if not mp.previous or not any(r.status == Status.FAILED for r in rows):
        return rows
    store = Store(settings.out)
    out = []
    for row in rows:
        prev = mp.previous.get((row.channel, row.output))
        if row.status == Status.FAILED and prev is not None and still_served(prev, store):
            row = as_kept(prev, settings.run_id, row.error or "failed")
        out.append(row)
    return out


def render_master(mp: MasterPlan, presets: dict[str, Preset], settings: JobSettings) -> list[Row]:
    """Every manifest row for one master. Failures are rows, never exceptions.

    Derivatives whose previous output still stands are recorded `skipped` with the previous
    file facts; the master is decoded only if something is left to render. A derivative that
    fails keeps its earlier published file (`kept`).
    """
    return keep_last_good(_render_master(mp, presets, settings), mp, settings)


def _render_master(mp: MasterPlan, presets: dict[str, Preset],
                   settings: JobSettings) -> list[Row]:
    master = mp.master
    base = _base_row(mp, settings.run_id, None)

    def fail_all(error: str) -> list[Row]:  # render_master keeps what still stands
        return _failed_all(mp, base, error)

    if master.errors:
        return fail_all(master.error or "")
    try:
        if master.kind == "video":  # streamed from its file: hashed here, decoded in one pass
            data = b""
            sha, size = hash_master(master.path, settings.max_master_bytes)
        else:
            data = read_master(master.path, settings.max_master_bytes)
            sha, size = hashlib.sha256(data).hexdigest(), len(data)
    except MasterError as exc:
        return fail_all(str(exc))
    if not mp.derivatives:
        return []

    store = Store(settings.out)
    base = base.replace(master_sha256=sha)
    skipped = {
        d: _with_master(mp.previous[(d.channel, d.output)], base).replace(
            status=Status.SKIPPED.value, error=None, render_ms=0.0, decode_ms=None)
        for d in mp.derivatives
        if d.error is None and not settings.force
        and _unchanged(mp.previous.get((d.channel, d.output)), d, sha, store)
    }
    skipped.update({  # not applicable before, and nothing that decides it has changed
        d: _with_master(mp.previous[(d.channel, d.output)], base).replace(
            render_ms=0.0, decode_ms=None)
        for d in mp.derivatives
        if d.error is None and not settings.force
        and _still_not_applicable(mp.previous.get((d.channel, d.output)), d, sha)
    })
    hls = _hls_todo(mp.derivatives, skipped)  # every file of an HLS set that must be remade
    remade = set(hls) | _choices_todo(mp.derivatives, skipped)
    skipped = {d: row for d, row in skipped.items() if d not in remade}
    todo = [d for d in mp.derivatives if d not in skipped and d.hls is None]
    recipes = {d.recipe_hash: d.preset for d in todo if d.error is None}
    if not recipes and not hls:
        return [skipped.get(d) or _failed(base, d, d.error or "") for d in mp.derivatives]
    wanted = {h: presets[name] for h, name in recipes.items()}
    framings = {d.recipe_hash: d.framing for d in todo if d.framing is not None}
    try:
        if master.kind == "video":
            with scratch("video") as work:
                results, decode_ms = (_render_video_master(master.path, wanted, settings, work,
                                                           framings)
                                      if wanted else ({}, 0.0))
                rows = _rows(mp, base, skipped, results, decode_ms, settings, store)
                return rows + _hls_rows(mp, base, hls, rows, presets, store, work)
        images = {h: p for h, p in wanted.items() if isinstance(p, ImagePreset)}  # all of them
        results, decode_ms = render_all(data, images, settings.max_pixels, framings)
    except MasterError as exc:
        return fail_all(str(exc))
    except MemoryError:  # one huge master must not take the worker (and the run) down
        return fail_all(f"out of memory decoding ({size} bytes)")
    return _rows(mp, base, skipped, results, decode_ms, settings, store)


def _rows(mp: MasterPlan, base: Row, skipped: dict[Derivative, Row],
          results: dict[str, Rendered | VideoRendered | MasterError], decode_ms: float,
          settings: JobSettings, store: Store) -> list[Row]:
    """Check, publish and describe each derivative of a rendered master."""
    published: dict[str, tuple[str, int]] = {}  # recipe hash -> (sha256, bytes) of its file
    rows = []
    for d in mp.derivatives:
        if d in skipped:
            rows.append(skipped[d])
            continue
        if d.hls is not None:  # made from the published rungs, after them (_hls_rows)
            continue
        if d.error is not None:
            rows.append(_failed(base, d, d.error))
            continue
        result = results[d.recipe_hash]
        if isinstance(result, NotApplicable):
            rows.append(_not_applicable(base, d, str(result)))
            continue
        if isinstance(result, MasterError):
            rows.append(_failed(base, d, f"{mp.master.path}: {result}"))
            continue
        rules = settings.rules.get((d.channel, d.output))
        small = _source_problem(rules, result, d)
        if small is not None:
            assert rules is not None
            rows.append(_not_applicable(base, d, f"not applicable: {small}")
                        if rules.below_min_source == "skip"
                        else _failed(base, d, f"{mp.master.path}: {small}"))
            continue
        broken = _broken_rules(rules, result)
        if broken:
            rows.append(_failed(base, d, f"breaks {d.channel} rules: {'; '.join(broken)}"))
            continue
        try:
            assert d.path is not None
            _publish(store, d.path, result)
        except (OSError, ValueError) as exc:
            rows.append(_failed(base, d, f"cannot write {d.path}: {exc}"))
            continue
        if d.recipe_hash not in published:
            published[d.recipe_hash] = _digest(result)
        sha, size = published[d.recipe_hash]
        rows.append(base.replace(
            channel=d.channel, output=d.output, preset=d.preset, path=d.path,
            status=Status.OK.value, error=None, **_facts(result), bytes=size, sha256=sha,
            recipe_hash=d.recipe_hash, render_ms=result.render_ms, decode_ms=decode_ms,
        ))
    return rows


def _choices_todo(derivatives: list[Derivative], skipped: dict[Derivative, Row]) -> set[Derivative]:
    """Every candidate of a breakpoints set of which one candidate is not skipped: the widths
    are chosen together (image/breakpoints.py), so a set is chosen again whole."""
    sets: dict[tuple[str, str], list[Derivative]] = {}
    for d in derivatives:
        if d.choice is not None:
            sets.setdefault((d.channel, d.choice), []).append(d)
    return {d for members in sets.values() if any(m not in skipped for m in members)
            for d in members}


# -- HLS sets (video/hls.py): made from a ladder's published rungs, no re-encode -------------

def _hls_todo(derivatives: list[Derivative], skipped: dict[Derivative, Row]) -> list[Derivative]:
    """The HLS files to make: every file of a set (its playlists hold byte ranges of its
    media files, so a set is remade whole) of which one file is not skipped."""
    return [d for files in _hls_sets(derivatives) if any(f not in skipped for f in files)
            for d in files]


def _hls_sets(derivatives: list[Derivative]) -> list[list[Derivative]]:
    """The files of each HLS set, grouped by channel, recipe and folder."""
    sets: dict[tuple[str, str, str], list[Derivative]] = {}
    for d in derivatives:
        if d.hls is not None:
            folder = (d.path or "")[: -len(d.hls)]
            sets.setdefault((d.channel, d.recipe_hash, folder), []).append(d)
    return list(sets.values())


def _hls_rows(mp: MasterPlan, base: Row, todo: list[Derivative], rows: list[Row],
              presets: dict[str, Preset], store: Store, work: Path) -> list[Row]:
    """Remux each HLS set's rungs (as published tonight) into HLS and publish it: media files
    first, then the media playlists, then the master playlist, each by temporary name and
    rename, so that no playlist ever names a file that is not there."""
    from .video.hls import MASTER, build

    published = {(r.channel, r.output): r for r in rows if r.published}
    out: list[Row] = []
    for i, files in enumerate(_hls_sets(todo)):
        master_file = next(d for d in files if d.hls == MASTER)
        if master_file.error is not None:
            out += [_failed(base, d, d.error or "") for d in files]
            continue
        start = time.perf_counter()
        stem = master_file.output.removesuffix("-hls")
        rungs = [(d.hls or "").split("/")[0] for d in files if d.format == "m4s"]
        na = {r for r in rungs if any(
            (x.channel, x.output) == (master_file.channel, f"{stem}-{r}")
            and x.status == Status.NOT_APPLICABLE for x in rows)}  # above the master's size
        if na and na == set(rungs):
            out += [_not_applicable(base, d, "not applicable: no rung of the ladder applies")
                    for d in files]
            continue
        out += [_not_applicable(base, d, f"not applicable: rung {(d.hls or '').split('/')[0]} "
                                "is above the master's size")
                for d in files if (d.hls or "").split("/")[0] in na]
        files = [d for d in files if (d.hls or "").split("/")[0] not in na]
        rungs = [r for r in rungs if r not in na]
        missing = [r for r in rungs if (master_file.channel, f"{stem}-{r}") not in published
                   or published[(master_file.channel, f"{stem}-{r}")].status == Status.KEPT]
        if missing:
            out += [_failed(base, d, f"hls: rung(s) {', '.join(missing)} not rendered tonight")
                    for d in files]
            continue
        try:
            sources = [(r, _local_copy(store, published[(master_file.channel, f"{stem}-{r}")]
                                       .path or "", work)) for r in rungs]
            preset = presets[f"{master_file.preset}@{rungs[0]}"]
            assert isinstance(preset, VideoPreset)
            made = build(sources, preset.keyframe_s, work / f"hls-{i}")
            by_rung = {r.name: r for r in made.rungs}
            top = max(made.rungs, key=lambda r: r.facts.width * r.facts.height)
            ms = (time.perf_counter() - start) * 1000 / len(files)
            for d in sorted(files, key=lambda d: (d.format != "m4s", d.hls == MASTER)):
                assert d.path is not None and d.hls is not None
                local = made.folder / d.hls
                store.write_file(d.path, local)
                rung = by_rung.get(d.hls.split("/")[0], top)
                with local.open("rb") as fh:
                    sha = sha256_of(fh)
                out.append(base.replace(
                    channel=d.channel, output=d.output, preset=d.preset, path=d.path,
                    status=Status.OK.value, error=None, format=d.format,
                    width=rung.facts.width, height=rung.facts.height, quality=None,
                    duration_s=round(rung.facts.duration_s, 4),
                    video_codec=rung.facts.video_codec, audio_codec=rung.facts.audio_codec,
                    bitrate=(rung.facts.bitrate if d.format == "m4s" else
                             None if d.hls == MASTER else rung.average_bandwidth),
                    bytes=local.stat().st_size, sha256=sha, recipe_hash=d.recipe_hash,
                    render_ms=ms, decode_ms=None))
        except (MasterError, OSError, ValueError) as exc:
            done = {r.output for r in out}
            out += [_failed(base, d, f"{mp.master.path}: hls: {exc}") for d in files
                    if d.output not in done]
    return out


def _local_copy(store: Store, relative: str, work: Path) -> Path:
    """A published file as a local path (an object store's is downloaded into `work`)."""
    if store.local:
        return Path(store.path(relative))
    local = work / "rungs" / relative
    local.parent.mkdir(parents=True, exist_ok=True)
    store.fs.get_file(store.path(relative), str(local))
    return local
