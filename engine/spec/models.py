"""Typed models of channel and preset files.

This module imports no pyvips, av or dask: it is plain data validated once at load. Every model
forbids unknown keys, so a typo in a file is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{6})$")

ImageFormat = Literal["jpeg", "webp", "avif", "png"]
FORMATS_WITH_ALPHA: frozenset[str] = frozenset({"webp", "avif", "png"})
EXTENSIONS: dict[str, str] = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "png": "png"}
# Sensible defaults per format; a preset may override quality and effort.
DEFAULT_QUALITY: dict[str, int] = {"jpeg": 85, "webp": 80, "avif": 55, "png": 100}
# Effort is chosen deliberately. AVIF (libaom via libheif), measured here on a 1440x960 photo,
# one thread: effort 0/1/2/3/4 took 107/113/317/511/1503 ms for 9.6/8.0/8.4/8.4/5.7 KB at the
# same error; 1 is the sweet spot for a batch. WebP's default 4 is a fair middle.
DEFAULT_EFFORT: dict[str, int] = {"jpeg": 0, "webp": 4, "avif": 1, "png": 6}

Gravity = Literal[
    "centre", "north", "south", "east", "west",
    "north-east", "north-west", "south-east", "south-west", "attention",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_colour(value: str) -> tuple[int, int, int]:
    return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))


def _check_colour(value: str) -> str:
    if not HEX_COLOUR.match(value):
        raise ValueError(f"expected a colour like '#ffffff', found {value!r}")
    return value.lower()


class Trim(Strict):
    """Remove a near-uniform border (the background around a product)."""

    threshold: Annotated[float, Field(ge=0, le=255)] = 10.0


class Resize(Strict):
    width: Annotated[int, Field(ge=1, le=16384)] | None = None
    height: Annotated[int, Field(ge=1, le=16384)] | None = None
    fit: Literal["fill", "fit", "pad", "limit"] = "fit"
    gravity: Gravity = "centre"
    fill_ratio: Annotated[float, Field(gt=0, le=1)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Resize:
        if self.width is None and self.height is None:
            raise ValueError("expected at least one of width or height")
        if self.fit in ("fill", "pad") and (self.width is None or self.height is None):
            raise ValueError(f"fit = {self.fit!r} needs both width and height")
        if self.fill_ratio is not None and self.fit != "pad":
            raise ValueError(f"fill_ratio only applies to fit = 'pad', found fit = {self.fit!r}")
        if self.gravity != "centre" and self.fit != "fill":
            raise ValueError(f"gravity only applies to fit = 'fill', found fit = {self.fit!r}")
        return self


class ImagePreset(Strict):
    """A named image recipe: everything that decides the output bytes."""

    kind: Literal["image"] = "image"
    description: str = ""
    trim: Trim | None = None
    resize: Resize
    background: str = "#ffffff"
    format: ImageFormat
    quality: Annotated[int, Field(ge=1, le=100)] | None = None
    effort: Annotated[int, Field(ge=0, le=9)] | None = None
    progressive: bool = True
    max_bytes: Annotated[int, Field(ge=256)] | None = None
    min_quality: Annotated[int, Field(ge=1, le=100)] = 40
    keep_alpha: bool = True

    _check_bg = field_validator("background")(_check_colour)

    @model_validator(mode="after")
    def _consistent(self) -> ImagePreset:
        if self.max_bytes is not None and self.format == "png":
            raise ValueError("max_bytes needs a lossy format (jpeg, webp, avif), found 'png'")
        if self.max_bytes is not None and self.min_quality > self.effective_quality:
            raise ValueError(
                f"min_quality {self.min_quality} is above quality {self.effective_quality}"
            )
        limits = {"webp": 6, "avif": 9, "png": 9, "jpeg": 0}
        if self.effort is not None and self.effort > limits[self.format]:
            raise ValueError(
                f"effort for {self.format} is 0..{limits[self.format]}, found {self.effort}"
            )
        return self

    @property
    def effective_quality(self) -> int:
        return self.quality if self.quality is not None else DEFAULT_QUALITY[self.format]

    @property
    def effective_effort(self) -> int:
        return self.effort if self.effort is not None else DEFAULT_EFFORT[self.format]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def has_alpha_output(self) -> bool:
        return self.keep_alpha and self.format in FORMATS_WITH_ALPHA

    def recipe(self) -> dict:
        """Everything that determines the output bytes (the description does not)."""
        data = self.model_dump(exclude={"description"})
        data["quality"] = self.effective_quality
        data["effort"] = self.effective_effort
        return data


Preset = ImagePreset


class When(Strict):
    """Which masters an output applies to."""

    role: Literal["product", "editorial", "any"] = "any"
    position: int | str | list[int] | None = None

    @field_validator("position")
    @classmethod
    def _position(cls, value: int | str | list[int] | None) -> int | str | list[int] | None:
        if isinstance(value, str) and not re.fullmatch(r"\d+-\d+", value):
            raise ValueError(f"expected a position, a range like '1-8' or a list, found {value!r}")
        if isinstance(value, str):
            lo, hi = (int(p) for p in value.split("-"))
            if lo > hi:
                raise ValueError(f"range {value!r} is empty")
        return value

    def matches(self, role: str, position: int) -> bool:
        if self.role != "any" and role != self.role:
            return False
        if self.position is None:
            return True
        if isinstance(self.position, int):
            return position == self.position
        if isinstance(self.position, list):
            return position in self.position
        lo, hi = (int(p) for p in self.position.split("-"))
        return lo <= position <= hi


PATH_FIELDS = frozenset({"id", "product", "position", "output", "channel", "ext", "role"})
DEFAULT_PATH = "{id}/{output}.{ext}"


def check_path_pattern(pattern: str) -> str:
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ValueError(f"bad naming pattern {pattern!r}: {exc}") from None
    for literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PATH_FIELDS:
            raise ValueError(
                f"unknown field {{{field}}} in naming pattern {pattern!r}; "
                f"expected one of {sorted(PATH_FIELDS)}"
            )
        if conversion:
            raise ValueError(f"conversions like !{conversion} are not allowed in {pattern!r}")
        if spec and field != "position":
            raise ValueError(f"a format spec is only allowed on {{position}}, in {pattern!r}")
        if spec and not re.fullmatch(r"0?\d{1,2}d?", spec):
            raise ValueError(f"bad position format {spec!r} in {pattern!r}; use e.g. '02'")
        del literal
    if pattern.startswith("/") or ".." in pattern.split("/"):
        raise ValueError(f"naming pattern {pattern!r} must stay inside the output folder")
    if "{ext}" not in pattern:
        raise ValueError(f"naming pattern {pattern!r} must end in {{ext}} so names match formats")
    return pattern


class Rules(Strict):
    """What a channel (or one of its outputs) accepts: checked against each preset at load time,
    on every encoded file before it is written, and by `fanout check`."""

    formats: list[ImageFormat] | None = None
    min_long_side: Annotated[int, Field(ge=1)] | None = None
    max_long_side: Annotated[int, Field(ge=1)] | None = None
    min_width: Annotated[int, Field(ge=1)] | None = None
    max_width: Annotated[int, Field(ge=1)] | None = None
    max_bytes: Annotated[int, Field(ge=1)] | None = None
    background: str | None = None
    min_fill: Annotated[float, Field(gt=0, le=1)] | None = None
    min_aspect: Annotated[float, Field(gt=0)] | None = None  # width / height
    max_aspect: Annotated[float, Field(gt=0)] | None = None
    colour: Literal["srgb"] = "srgb"

    def merged(self, override: Rules | None) -> Rules:
        """These rules with an output's own rules on top."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_unset=True))

    @field_validator("background")
    @classmethod
    def _bg(cls, value: str | None) -> str | None:
        return None if value is None else _check_colour(value)


class Output(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
    preset: str
    when: When = When()
    path: str = DEFAULT_PATH
    description: str = ""
    rules: Rules | None = None  # on top of the channel's rules, for this output only

    _check_path = field_validator("path")(check_path_pattern)


class Channel(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    description: str = ""
    outputs: Annotated[list[Output], Field(min_length=1)]
    rules: Rules = Rules()

    def rules_for(self, output: Output) -> Rules:
        return self.rules.merged(output.rules)

    @model_validator(mode="after")
    def _unique(self) -> Channel:
        seen: set[str] = set()
        for output in self.outputs:
            if output.name in seen:
                raise ValueError(f"output name {output.name!r} appears twice")
            seen.add(output.name)
        return self


def recipe_hash(preset: Preset, engine_version: str) -> str:
    """Hash of everything that decides a derivative's bytes: the recipe and the engine."""
    payload = json.dumps(
        {"recipe": preset.recipe(), "engine": engine_version}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
