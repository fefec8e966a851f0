"""Catalog x channels -> what each master needs. Pure: no files, no pixels, no Dask.

Each derivative carries the hash of its recipe; within a master, derivatives with one hash are
one render written to several places.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from dataclasses import dataclass, field, replace

from .catalog import Master
from .spec.models import Channel, Preset, recipe_hash


@dataclass(frozen=True)
class Derivative:
    channel: str
    output: str
    preset: str
    recipe_hash: str
    format: str
    path: str | None  # relative to OUT; None when the master cannot be named (bad id)
    error: str | None = None


@dataclass
class MasterPlan:
    master: Master
    derivatives: list[Derivative] = field(default_factory=list)
    # (channel, output) -> the row a previous run recorded; empty on a first or --force run
    previous: dict[tuple[str, str], dict] = field(default_factory=dict)

    def recipes(self) -> dict[str, str]:
        """recipe hash -> preset name, for the derivatives that can render."""
        return {d.recipe_hash: d.preset for d in self.derivatives if d.error is None}


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
    masters: list[Master], channels: list[Channel], presets: dict[str, Preset], engine_id: str
) -> Plan:
    hashes = {name: recipe_hash(p, engine_id) for name, p in presets.items()}
    plans = []
    for master in masters:
        kind = master.kind or "image"  # unrecognised content is planned as an image; decode says why
        mp = MasterPlan(master)
        for channel in channels:
            for output in channel.outputs:
                preset = presets[output.preset]
                if preset.kind != kind or not output.when.matches(master.role, master.position):
                    continue
                path, error = None, None
                if not master.errors:
                    try:
                        path = output_path(channel, output.path, master, output.name,
                                           preset.extension)
                    except ValueError as exc:
                        error = str(exc)
                mp.derivatives.append(Derivative(
                    channel=channel.name, output=output.name, preset=output.preset,
                    recipe_hash=hashes[output.preset], format=preset.format, path=path,
                    error=error,
                ))
        plans.append(mp)
    _mark_collisions(plans)
    return Plan(plans, presets)


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
