"""Responsive breakpoints: which widths of a set to publish for one master, chosen by bytes.

A preset with `breakpoints = { min_width, max_width, max_count, min_step_bytes }` is planned
as one derivative per candidate width (spec/models.py Breakpoints.widths: 10% apart), so every
file a set may write has its path, ownership and journal entry before the run starts, like any
other derivative. Per master, this module renders only the widths worth serving:

1. the top: the widest candidate the master can fill (under fit = 'limit', the first candidate
   at or past the master's width, which renders at the master's own width; the wider ones are
   not applicable), and the bottom (min_width);
2. a model of the file's bytes against its width fitted through those two files, bytes = a +
   b * width^2 (an encoder's output grows with the pixel count; exact at both ends);
3. n = min(max_count, 1 + (top bytes - bottom bytes) // min_step_bytes) widths, at equal byte
   steps between the ends, each snapped to the nearest unused candidate;
4. those encoded, then checked: a width whose file is not min_step_bytes above the previous
   one kept (and below the top) is dropped after all.

So a flat graphic gets one or two widths and a detailed photo up to max_count, as Cloudinary's
responsive breakpoints do. Costs: two encodes per set beyond the widths published. The
candidates not chosen are `n/a` rows whose `error` names the widths that were.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TypeVar

from ..errors import MasterError, NotApplicable
from ..spec.models import Breakpoints

R = TypeVar("R")  # a rendered file: anything with .width and .data


def choose(candidates: list[tuple[int, str]], render: Callable[[str], R], source_width: int,
           limit: bool, rule: Breakpoints) -> dict[str, R | MasterError]:
    """Per candidate recipe: its rendering (chosen, with `breakpoints` set to the widths
    chosen) or a NotApplicable/MasterError. `candidates`: (width, recipe), any order;
    `render(recipe)` encodes one (it may raise MasterError); `limit`: never wider than the
    master (fit = 'limit')."""
    ordered = sorted(candidates)
    results: dict[str, R | MasterError] = {}
    usable = ordered
    if limit:
        fits = [c for c in ordered if c[0] < source_width]
        usable = fits + [c for c in ordered if c[0] >= source_width][:1]
        for width, recipe in ordered[len(usable):]:
            results[recipe] = NotApplicable(
                f"not applicable: {width} px is wider than the master ({source_width} px)")
    made: dict[str, R] = {}

    def make(recipe: str) -> R | None:
        if recipe not in made and recipe not in results:
            try:
                made[recipe] = render(recipe)
            except MasterError as exc:
                results[recipe] = exc
        return made.get(recipe)

    top = make(usable[-1][1])
    if top is None:  # the widest failed: the set fails with it
        return {r: results[usable[-1][1]] for _, r in ordered} | {
            r: v for r, v in results.items() if isinstance(v, NotApplicable)}
    chosen = [usable[-1]]
    bottom = make(usable[0][1]) if len(usable) > 1 else None
    if bottom is not None:
        span = len(top.data) - len(bottom.data)  # type: ignore[attr-defined]
        count = min(rule.max_count, 1 + max(span, 0) // rule.min_step_bytes)
        if count >= 2:
            chosen = [usable[0], *_between(usable, top, bottom, count), usable[-1]]
    kept = _spaced([(w, r) for w, r in sorted(set(chosen)) if make(r) is not None], made,
                   rule.min_step_bytes)
    widths = [made[r].width for _, r in kept]  # type: ignore[attr-defined]
    shown = ", ".join(map(str, widths))
    for _, recipe in kept:
        results[recipe] = dataclasses.replace(made[recipe], breakpoints=tuple(widths))
    for width, recipe in usable:
        results.setdefault(recipe, NotApplicable(
            f"not applicable: {width} px is not a breakpoint for this master (chosen: {shown}; "
            f"at most {rule.max_count}, at least {rule.min_step_bytes} bytes apart)"))
    return results


def _between(usable: list[tuple[int, str]], top: R, bottom: R,
             count: int) -> list[tuple[int, str]]:
    """count - 2 candidates between the ends, at equal steps of the modelled bytes."""
    wt, wb = top.width, bottom.width  # type: ignore[attr-defined]
    bt, bb = len(top.data), len(bottom.data)  # type: ignore[attr-defined]
    slope = (bt - bb) / max(wt * wt - wb * wb, 1)
    inner = list(usable[1:-1])
    picked = []
    for k in range(1, count - 1):
        target = bb + (bt - bb) * k / (count - 1)
        width = math.sqrt(max(wb * wb + (target - bb) / slope, 0.0)) if slope > 0 else wb
        if not inner:
            break
        nearest = min(inner, key=lambda c: abs(c[0] - width))
        inner.remove(nearest)
        picked.append(nearest)
    return picked


def _spaced(chosen: list[tuple[int, str]], made: dict[str, R],
            step: int) -> list[tuple[int, str]]:
    """The chosen widths whose files are at least `step` bytes above the previous one kept and
    below the widest (always kept)."""
    if len(chosen) <= 1:
        return chosen
    size = {r: len(made[r].data) for _, r in chosen}  # type: ignore[attr-defined]
    top = chosen[-1]
    kept = [chosen[0]] if size[top[1]] - size[chosen[0][1]] >= step else []
    for c in chosen[1:-1]:
        if kept and size[c[1]] - size[kept[-1][1]] < step:
            continue
        if size[top[1]] - size[c[1]] >= step:
            kept.append(c)
    return kept + [top]
