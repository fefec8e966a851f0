"""Catalog x channels -> what each master needs. Pure: no files, no pixels, no Dask.

Each derivative carries the hash of its recipe; within a master, derivatives with one hash are
one render written to several places.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections import Counter
from dataclasses import dataclass, field, replace

from .catalog import Master
from .geometry import Framing, aspect_key, aspect_matches
from .rows import Row
from .spec.models import Channel, ImagePreset, Preset, VideoPreset, recipe_hash
from .video.layout import hls_files


@dataclass(frozen=True)
class Derivative:
    channel: str
    output: str
    preset: str
    recipe_hash: str
    format: str
    path: str | None  # relative to OUT; None when the master cannot be named (bad id)
    error: str | None = None
    hls: str | None = None  # a file of an HLS set: its name inside the set's folder (hls.py)
    framing: Framing | None = None  # the editor's focal point / crop box for a fill output
    choice: str | None = None  # a breakpoints candidate: its set's channel output (chosen per
    # master by bytes at render time; the candidates not chosen are recorded n/a)


@dataclass
class MasterPlan:
    master: Master
    derivatives: list[Derivative] = field(default_factory=list)
    # (channel, output) -> the row a previous run recorded; empty on a first or --force run
    previous: dict[tuple[str, str], Row] = field(default_factory=dict)

    def recipes(self) -> dict[str, str]:
        """recipe hash -> preset name, for the derivatives that can render."""
        return {d.recipe_hash: d.preset for d in self.derivatives if d.error is None}

    def to_dict(self) -> dict[str, object]:
        m = self.master
        return {
            "id": m.id, "path": m.path, "kind": m.kind, "role": m.role, "product": m.product,
            "position": m.position, "error": m.error,
            "derivatives": [
                {"channel": d.channel, "output": d.output, "preset": d.preset,
                 "format": d.format, "path": d.path, "recipe_hash": d.recipe_hash,
                 "error": d.error}
                for d in self.derivatives
            ],
            "renders": len(self.recipes()),
        }


@dataclass
class Plan:
    masters: list[MasterPlan]
    presets: dict[str, Preset]

    @property
    def derivative_count(self) -> int:
        return sum(len(mp.derivatives) for mp in self.masters)

    @property
    def render_count(self) -> int:
        return sum(len(mp.recipes()) for mp in self.masters)

    def per_channel(self) -> dict[str, int]:
        return dict(Counter(d.channel for mp in self.masters for d in mp.derivatives))

    def to_dict(self) -> dict[str, object]:
        """The plan as `fanout plan --json` prints it: every master, every derivative, totals."""
        return {
            "masters": [mp.to_dict() for mp in self.masters],
            "totals": {"masters": len(self.masters), "derivatives": self.derivative_count,
                       "renders": self.render_count, "per_channel": self.per_channel()},
        }


def output_path(channel: Channel, pattern: str, master: Master, output: str, ext: str) -> str:
    name = pattern.format(
        id=master.id, product=master.product, position=master.position, output=output,
        channel=channel.name, ext=ext, role=master.role,
    )
    path = posixpath.normpath(f"{channel.name}/{name}")
    if path.startswith("/") or path.split("/")[0] != channel.name or ".." in path.split("/"):
        raise ValueError(f"output path {path!r} would leave the output folder")
    return path


def plan(
    masters: list[Master], channels: list[Channel], presets: dict[str, Preset],
    engine_id: dict[str, str],
) -> Plan:
    """`engine_id` names the image and video engines (libvips, FFmpeg builds) by kind."""
    concrete = expand_ladders(presets)
    hashes = {name: recipe_hash(p, _engine_for(p, engine_id)) for name, p in concrete.items()}
    plans = []
    for master in masters:
        kind = master.kind or "image"  # unrecognised content is planned as an image; decode says why
        mp = MasterPlan(master)
        for channel in channels:
            for output in channel.outputs:
                if presets[output.preset].master_kind != kind or not output.when.matches(
                    master.role, master.position, master.tags
                ):
                    continue
                framing = framing_for(master, channel.name, output.name,
                                      presets[output.preset])
                framed = {n: framed_hash(hashes[n], framing)
                          for _, n in ladder_names(output.preset, presets[output.preset])}
                for rung, preset_name in ladder_names(output.preset, presets[output.preset]):
                    name = output.name if rung is None else f"{output.name}-{rung}"
                    preset = concrete[preset_name]
                    path, error = None, None
                    if not master.errors:
                        try:
                            path = output_path(channel, output.path, master, name,
                                               preset.extension)
                        except ValueError as exc:
                            error = str(exc)
                    mp.derivatives.append(Derivative(
                        channel=channel.name, output=name, preset=preset_name,
                        recipe_hash=framed[preset_name], format=preset.format, path=path,
                        error=error, framing=framing,
                        choice=(output.name if isinstance(preset, ImagePreset)
                                and preset.breakpoint_set else None),
                    ))
                mp.derivatives += _hls_derivatives(channel, output.path, output.name,
                                                   output.preset, presets[output.preset],
                                                   master, framed)
        plans.append(mp)
    _mark_collisions(plans)
    return Plan(plans, concrete)


def _hls_derivatives(channel: Channel, pattern: str, output: str, name: str, preset: Preset,
                     master: Master, hashes: dict[str, str]) -> list[Derivative]:
    """The files of a ladder's HLS set (`hls = true`), each a derivative of its own, in a folder
    named like a file of output `<output>-hls` without its extension: `<output>-hls` is the
    master playlist, `<output>-hls-<rung>` a rung's media playlist and `...-media` its fMP4."""
    if not isinstance(preset, VideoPreset) or not preset.hls or preset.ladder is None:
        return []
    folder, error = None, None
    if not master.errors:
        try:
            folder = posixpath.splitext(output_path(channel, pattern, master, f"{output}-hls",
                                                    "m3u8"))[0]
        except ValueError as exc:
            error = str(exc)
    # One recipe for the whole set: the ladder (every rung's recipe) and hls = true.
    recipe = hashlib.sha256(f"hls:{','.join(hashes[n] for _, n in ladder_names(name, preset))}"
                            .encode()).hexdigest()[:32]
    out = []
    for inner, rung, role in hls_files([r.name for r in preset.ladder]):
        out.append(Derivative(
            channel=channel.name,
            output=f"{output}-hls" + (f"-{rung}" if rung else "") + ("-media" if role == "media"
                                                                      else ""),
            preset=name if rung is None else f"{name}@{rung}", recipe_hash=recipe,
            format="m4s" if role == "media" else "m3u8",
            path=None if folder is None else f"{folder}/{inner}", error=error, hls=inner))
    return out


def framing_for(master: Master, channel: str, output: str, preset: Preset) -> Framing | None:
    """The master's framing for one output: for `fill` outputs only (nothing else crops), the
    master's focal point and the box for `channel/output`, else the box whose aspect matches
    the output's within 1%. Video outputs take the focal point only (boxes: images, stills)."""
    resize = preset.resize
    if resize.fit != "fill" or (master.focus is None and not master.boxes):
        return None
    assert resize.width is not None and resize.height is not None
    box, key = None, None
    if not isinstance(preset, VideoPreset):
        named = dict(master.boxes)
        if f"{channel}/{output}" in named:
            key = f"{channel}/{output}"
            box = named[key]
        else:
            for k, b in master.boxes:
                ratio = aspect_key(k)
                if ratio is not None and aspect_matches(ratio, resize.width, resize.height):
                    key, box = k, b
                    break
    if master.focus is None and box is None:
        return None
    return Framing(focus=master.focus, box=box, key=key)


def framed_hash(recipe: str, framing: Framing | None) -> str:
    """A derivative's recipe hash with the editor's framing mixed in: moving a focal point or a
    box changes the hash of exactly the outputs it crops, so the next run re-renders them."""
    if framing is None:
        return recipe
    return hashlib.sha256(f"{recipe}|{framing.describe()}".encode()).hexdigest()[:32]


def _engine_for(preset: Preset, engine_id: dict[str, str]) -> str:
    if isinstance(preset, VideoPreset):
        return engine_id["video"]
    if preset.frame is not None:  # a still of a video: both decide its bytes
        return f"{engine_id['image']}+{engine_id['video']}"
    return engine_id["image"]


def ladder_names(name: str, preset: Preset) -> list[tuple[str | None, str]]:
    """(rung, concrete preset name) for each output a preset makes: `name@rung` per ladder rung
    (video) or per candidate width of a breakpoints set (image)."""
    if isinstance(preset, ImagePreset) and preset.breakpoints is not None:
        return [(str(w), f"{name}@{w}") for w in preset.breakpoints.widths()]
    if not isinstance(preset, VideoPreset) or preset.ladder is None:
        return [(None, name)]
    return [(r.name, f"{name}@{r.name}") for r in preset.ladder]


def expand_ladders(presets: dict[str, Preset]) -> dict[str, Preset]:
    """Every preset, with each ladder replaced by one concrete preset per rung (`name@rung`),
    and each breakpoints set by one per candidate width (`name@width`)."""
    out: dict[str, Preset] = {}
    for name, preset in presets.items():
        if isinstance(preset, VideoPreset) and preset.ladder is not None:
            out.update({f"{name}@{rung}": p for rung, p in preset.rungs()})
        elif isinstance(preset, ImagePreset) and preset.breakpoints is not None:
            out.update({f"{name}@{w}": p for w, p in preset.candidates(name)})
        else:
            out[name] = preset
    return out


def _mark_collisions(plans: list[MasterPlan]) -> None:
    """No two derivatives may write one file (say two position-0 images of one Amazon product)."""
    owners: dict[str, list[str]] = {}
    for mp in plans:
        for d in mp.derivatives:
            if d.path is not None:
                owners.setdefault(d.path, []).append(f"{mp.master.id} ({d.output})")
    for mp in plans:
        mp.derivatives = [
            replace(d, error=(
                f"output path {d.path!r} is claimed by several derivatives: "
                + ", ".join(sorted(owners[d.path]))
            )) if d.path is not None and len(owners[d.path]) > 1 else d
            for d in mp.derivatives
        ]
