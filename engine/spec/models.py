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

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .. import formats

HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{6})$")

# Formats and codecs come from the one registry, engine/formats.py (a new format is one entry
# there), in its order, which is the order messages list them in.
ImageFormat = Literal[formats.IMAGE_OUTPUTS]  # type: ignore[valid-type]
# Video outputs: MP4 (H.264, HEVC, AV1), WebM (VP9, AV1), and short animated previews (GIF, WebP).
VideoFormat = Literal[formats.VIDEO_OUTPUTS]  # type: ignore[valid-type]
AnyFormat = Literal[formats.OUTPUTS]  # type: ignore[valid-type]
VideoCodec = Literal[formats.VIDEO_CODECS]  # type: ignore[valid-type]
_IMAGE_OUTPUTS = [formats.FORMATS[name] for name in formats.IMAGE_OUTPUTS]
FORMATS_WITH_ALPHA: frozenset[str] = frozenset(f.name for f in _IMAGE_OUTPUTS if f.alpha)
EXTENSIONS: dict[str, str] = {name: formats.extension(name) for name in formats.OUTPUTS}
# Defaults per format (the reasons are beside each in formats.py); a preset may override them.
DEFAULT_QUALITY: dict[str, int] = {
    f.name: f.quality for f in _IMAGE_OUTPUTS if f.quality is not None
}
DEFAULT_EFFORT: dict[str, int] = {
    f.name: f.effort for f in _IMAGE_OUTPUTS if f.effort is not None
}
MAX_EFFORT: dict[str, int] = {f.name: f.max_effort or 0 for f in _IMAGE_OUTPUTS}
# quality = "auto": the named targets, as SSIMULACRA2 scores. The metric's own scale: 90
# "visually lossless" (no difference in a flicker test at 1:1), 80 "very high" (none seen side
# by side at 1:1; libjpeg-turbo Q85-Q90 on photos), 70 "high" (artefacts hard to notice without
# the original; about libjpeg-turbo Q65-Q70). "good" is the web's level, "eco" where bytes
# matter more than the last detail (email, thumbnails), "high" for zoom and re-editing.
TARGETS: dict[str, float] = {"high": 90.0, "good": 80.0, "eco": 70.0}
DEFAULT_TARGET = "good"
# quality = "auto" with match_quality = N: the target is, per derivative, the score that the
# format's conventional encode at quality N reaches on the same pixels (image/encode.py), less
# this many points (the benchmark's bound is 2: below a point or two, SSIMULACRA2 differences
# are not seen side by side).
MATCH_SLACK = 1.5
# The quality span "auto" searches per format, lowest first (below it blocks or smearing show
# on any photo; above it the bytes grow much faster than the score).
AUTO_RANGE: dict[str, tuple[int, int]] = {"jpeg": (30, 98), "webp": (30, 98), "avif": (25, 90)}
# Encoder settings beyond quality and effort (engine/image/encode.py: JPEG's mozjpeg options,
# AVIF's 4:4:4), per format: in that format's recipes, so changing them re-renders that format
# and nothing else. Bump one whenever encode.py's options for its format change.
# (AVIF: "anchor1" is encode.ANCHOR_EFFORT, match_quality measured at effort 1; the default
# effort itself, 3, is in the recipe as `effort`.)
ENCODER_SETTINGS: dict[str, str] = {"jpeg": "mozjpeg-420", "avif": "444-anchor1"}

Gravity = Literal[
    "centre", "north", "south", "east", "west",
    "north-east", "north-west", "south-east", "south-west", "attention",
]


class Strict(BaseModel):
    """Unknown keys are errors, and so are values of the wrong type: `quality = "92"` or
    `progressive = "yes"` is refused, never coerced (an integer is still a number, so
    `threshold = 10` fits a float field)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def parse_colour(value: str) -> tuple[int, int, int]:
    return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))


def _one_of(values: list | tuple) -> str:
    """'a', 'b' or 'c' (for messages)."""
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


# The checks below raise ValueError with one line per problem, each "expected X; found Y" about
# the table checked, or "KEY: expected X; found Y" about one of its keys (KEY relative to the
# table, e.g. "ladder[1].name"); the loader puts the file and the key path from the top in front.


def _check_colour(value: str) -> str:
    if not HEX_COLOUR.match(value):
        raise ValueError("expected a colour like '#ffffff'")  # the loader adds what it found
    return value.lower()


# How far a preset may enlarge its source: "allow" (the default: any factor), "never" (at most
# 1x) or a maximum factor (>= 1). A derivative beyond it fails alone (pipeline.check_upscale).
Upscale = Literal["never", "allow"] | Annotated[float, Field(ge=1)]


def upscale_limit(value: str | float) -> float | None:
    """The largest enlargement a preset's `upscale` allows (None: any)."""
    if value == "allow":
        return None
    return 1.0 if value == "never" else float(value)


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
        problems = []
        sizes = [f"{k} = {v}" for k, v in (("width", self.width), ("height", self.height))
                 if v is not None]
        if not sizes:
            problems.append("expected width, height or both; found neither")
        elif self.fit in ("fill", "pad") and len(sizes) < 2:
            problems.append(f"expected width and height for fit = {self.fit!r}; "
                            f"found {sizes[0]} only")
        if self.fill_ratio is not None and self.fit != "pad":
            problems.append(f"fill_ratio: expected no fill_ratio unless fit = 'pad'; "
                            f"found {self.fill_ratio:g} with fit = {self.fit!r}")
        if self.gravity != "centre" and self.fit != "fill":
            problems.append(f"gravity: expected 'centre' unless fit = 'fill'; "
                            f"found {self.gravity!r} with fit = {self.fit!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


# Responsive breakpoints: the candidate widths are this far apart (each the previous x 1.1,
# rounded up to a multiple of 8), so a set chooses among about 23 widths from 320 to 2560.
BREAKPOINT_GRID = 1.1


class Breakpoints(Strict):
    """Widths chosen per master by bytes (Cloudinary's responsive breakpoints): between
    min_width and max_width, at most max_count widths, consecutive files at least
    min_step_bytes apart. image/breakpoints.py chooses; every candidate is a derivative of its
    own (`<output>-<width>`), the ones not chosen recorded `n/a`."""

    min_width: Annotated[int, Field(ge=16, le=16384)]
    max_width: Annotated[int, Field(ge=16, le=16384)]
    max_count: Annotated[int, Field(ge=1, le=32)] = 8
    min_step_bytes: Annotated[int, Field(ge=1)] = 20000

    @model_validator(mode="after")
    def _ordered(self) -> Breakpoints:
        if self.max_width <= self.min_width:
            raise ValueError(f"max_width: expected more than min_width = {self.min_width}; "
                             f"found {self.max_width}")
        return self

    def widths(self) -> list[int]:
        """The candidate widths, smallest first: min_width, then steps of BREAKPOINT_GRID
        (rounded up to a multiple of 8), then max_width."""
        out = [self.min_width]
        while True:
            nxt = -(-int(out[-1] * BREAKPOINT_GRID) // 8) * 8
            if nxt >= self.max_width:
                return out + [self.max_width]
            out.append(max(nxt, out[-1] + 8))


class ImagePreset(Strict):
    """A named image recipe: everything that decides the output bytes."""

    kind: Literal["image"] = "image"
    description: str = ""
    trim: Trim | None = None
    resize: Resize
    background: str = "#ffffff"
    format: ImageFormat
    # A number, or "auto": per derivative, the smallest file whose SSIMULACRA2 score meets
    # `target` (image/encode.py searches it; the score goes to the manifest).
    quality: Annotated[int, Field(ge=1, le=100)] | Literal["auto"] | None = None
    target: Literal["high", "good", "eco"] | Annotated[float, Field(ge=30, le=100)] | None = None
    # With "auto": also (or, without `target`, only) reach the score the format's conventional
    # encode at this quality reaches on each derivative, less MATCH_SLACK: "as good as the
    # fixed quality you would have set, per image, in fewer bytes".
    match_quality: Annotated[int, Field(ge=1, le=100)] | None = None
    effort: Annotated[int, Field(ge=0, le=9)] | None = None
    progressive: bool = True
    max_bytes: Annotated[int, Field(ge=256)] | None = None
    min_quality: Annotated[int, Field(ge=1, le=100)] = 40
    keep_alpha: bool = True
    # Set on a poster or thumbnail recipe: the image is a frame of a video master (at this many
    # seconds, or "best": a representative frame, not black, not blurred), not an image master.
    frame: Annotated[float, Field(ge=0)] | Literal["best"] | None = None
    upscale: Upscale = "allow"
    breakpoints: Breakpoints | None = None  # widths chosen per master by bytes (candidates())
    # Set by candidates() on each concrete width of a breakpoints set: the set's preset name.
    # Not part of the recipe (image/render.py groups a set's candidates by it).
    _breakpoint_set: str | None = PrivateAttr(default=None)

    _check_bg = field_validator("background")(_check_colour)

    @model_validator(mode="before")
    @classmethod
    def _breakpoints_width(cls, data: object) -> object:
        """A breakpoints preset's resize may leave the width out: it is max_width."""
        if isinstance(data, dict) and isinstance(data.get("breakpoints"), dict) and isinstance(
                data.get("resize"), dict) and "width" not in data["resize"] and \
                "height" not in data["resize"] and "max_width" in data["breakpoints"]:
            data = {**data, "resize": {**data["resize"],
                                       "width": data["breakpoints"]["max_width"]}}
        return data

    def candidates(self, name: str) -> list[tuple[str | None, ImagePreset]]:
        """(width as text, concrete preset) for each candidate width of breakpoints set `name`
        (this preset's name), or [(None, self)]."""
        if self.breakpoints is None:
            return [(None, self)]
        out = []
        for width in self.breakpoints.widths():
            concrete = self.model_copy(
                update={"resize": self.resize.model_copy(update={"width": width})})
            concrete._breakpoint_set = name
            out.append((str(width), concrete))
        return out

    @property
    def breakpoint_set(self) -> str | None:
        """A breakpoints candidate's set (None: not a candidate)."""
        return self._breakpoint_set

    @property
    def master_kind(self) -> str:
        """The kind of master this recipe applies to."""
        return "image" if self.frame is None else "video"

    @model_validator(mode="after")
    def _consistent(self) -> ImagePreset:
        problems = []
        if self.max_bytes is not None and self.format == "png":
            problems.append("max_bytes: expected a lossy format (jpeg, webp or avif) for a byte "
                            "budget; found format = 'png'")
        elif (self.max_bytes is not None and not self.auto
              and self.min_quality > self.effective_quality):
            default = "" if self.quality is not None else f" ({self.format}'s default)"
            problems.append(f"min_quality: expected at most quality = {self.effective_quality}"
                            f"{default}; found {self.min_quality}")
        if self.quality == "auto" and self.format not in AUTO_RANGE:
            problems.append(f"quality: expected a number for format = {self.format!r} "
                            f"(\"auto\" needs a lossy format: jpeg, webp or avif); found 'auto'")
        for key in ("target", "match_quality"):
            if getattr(self, key) is not None and not self.auto:
                problems.append(f"{key}: expected no {key} unless quality = 'auto'; found "
                                f"{getattr(self, key)!r} with quality = "
                                f"{self.effective_quality}")
        if self.breakpoints is not None:
            problems += _breakpoint_problems(self)
        limits = MAX_EFFORT
        if self.effort is not None and self.effort > limits[self.format]:
            span = f"0..{limits[self.format]}" if limits[self.format] else "0"
            problems.append(f"effort: expected {span} for format = {self.format!r}; "
                            f"found {self.effort}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def auto(self) -> bool:
        """quality = "auto": the encoder searches the quality per derivative (a lossy format's
        only: an unvalidated copy turned into PNG, as a lossless reference, is not searched)."""
        return self.quality == "auto" and self.format in AUTO_RANGE

    @property
    def effective_quality(self) -> int:
        """The fixed quality; with "auto", where the search starts (the format's default)."""
        return self.quality if isinstance(self.quality, int) else DEFAULT_QUALITY[self.format]

    @property
    def target_score(self) -> float | None:
        """The fixed SSIMULACRA2 score "auto" aims at (None: a fixed quality, or match_quality
        alone: the target is then the conventional encode's score, per derivative)."""
        if not self.auto or (self.target is None and self.match_quality is not None):
            return None
        target = self.target if self.target is not None else DEFAULT_TARGET
        return TARGETS[target] if isinstance(target, str) else float(target)

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
        data = self.model_dump(exclude={"description"} | _default_upscale(self)
                               | ({"breakpoints"} if self.breakpoints is None else set()))
        data["quality"] = "auto" if self.auto else self.effective_quality
        data["effort"] = self.effective_effort
        if self.auto:
            data["target"] = self.target_score
        else:
            del data["target"]  # absent at a fixed quality, so existing recipe hashes stand
        if self.match_quality is None:
            del data["match_quality"]  # absent unless set: existing recipe hashes stand
        else:
            data["match_slack"] = MATCH_SLACK
        if self.format in ENCODER_SETTINGS:  # encode.py's options decide the bytes too
            data["encoder_settings"] = ENCODER_SETTINGS[self.format]
        return data


def _breakpoint_problems(preset: ImagePreset) -> list[str]:
    """A breakpoints set resizes by width only, never upscaling past the master (fit = 'limit'
    or 'fit'), up to max_width; a poster frame has no bytes to choose by."""
    bp, resize = preset.breakpoints, preset.resize
    assert bp is not None
    problems = []
    if resize.fit not in ("limit", "fit") or resize.height is not None:
        problems.append(f"breakpoints: expected resize by width only with fit = 'limit' or "
                        f"'fit'; found fit = {resize.fit!r}"
                        + (f" and height = {resize.height}" if resize.height else ""))
    if resize.width not in (None, bp.max_width):
        problems.append(f"breakpoints: expected resize.width left out or equal to max_width = "
                        f"{bp.max_width}; found {resize.width}")
    if preset.frame is not None:
        problems.append("breakpoints: expected an image master's preset; found frame = "
                        f"{preset.frame!r}")
    return problems


def _default_upscale(preset: ImagePreset | VideoPreset) -> set[str]:
    """`upscale` is left out of a recipe at its default, so existing recipe hashes stand."""
    return {"upscale"} if preset.upscale == "allow" else set()


# Default constant-quality settings per codec (ffmpeg's defaults for x264/x265; the usual
# starting points for VP9 and SVT-AV1), and encoder speed presets (see STACK.md).
DEFAULT_CRF: dict[str, int] = {"h264": 23, "hevc": 28, "vp9": 32, "av1": 35}
DEFAULT_SPEED: dict[str, str] = {"h264": "fast", "hevc": "fast", "vp9": "4", "av1": "8"}
# Per video output format (formats.py): the codecs it may hold, the default first; an animated
# preview has none. Audio may always be "none" (silent).
VIDEO_CODECS_FOR: dict[str, tuple[str, ...]] = {
    name: formats.FORMATS[name].video_codecs for name in formats.VIDEO_OUTPUTS
}
AUDIO_FOR: dict[str, tuple[str, ...]] = {
    name: formats.FORMATS[name].audio_codecs + ("none",) for name in formats.VIDEO_OUTPUTS
}
ANIMATED_FORMATS = frozenset(formats.ANIMATED)
# An animated preview is held in memory frame by frame: keep it short.
MAX_ANIMATION_FRAMES = 300


def _twice(key: str, what: str, names: list[str]) -> list[str]:
    """`key[i].name` problems for names an earlier item of the list already has."""
    problems, first = [], {}
    for i, name in enumerate(names):
        if name in first:
            problems.append(f"{key}[{i}].name: expected a name no other {what} has; "
                            f"found {name!r}, which {key}[{first[name]}] has too")
        first.setdefault(name, i)
    return problems


def _area(rung: Rung) -> int:
    """A rung's box area, for ordering a ladder (a missing side counts as the other)."""
    w, h = rung.width or rung.height or 0, rung.height or rung.width or 0
    return w * h


class Rung(Strict):
    """One rung of a bitrate ladder: its own frame box and bitrate; the rest is the preset's."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
    width: Annotated[int, Field(ge=2, le=8192)] | None = None
    height: Annotated[int, Field(ge=2, le=8192)] | None = None
    bitrate_kbps: Annotated[int, Field(ge=16)]
    maxrate_kbps: Annotated[int, Field(ge=16)] | None = None
    bufsize_kbps: Annotated[int, Field(ge=16)] | None = None


class VideoPreset(Strict):
    """A named video recipe: frame size and fit, codec, rate control, fps cap, trim, audio."""

    kind: Literal["video"]
    description: str = ""
    resize: Resize
    background: str = "#000000"
    format: VideoFormat = "mp4"
    codec: VideoCodec | None = None  # default per format: mp4 h264, webm vp9
    crf: Annotated[int, Field(ge=0, le=63)] | None = None
    bitrate_kbps: Annotated[int, Field(ge=16)] | None = None
    maxrate_kbps: Annotated[int, Field(ge=16)] | None = None
    bufsize_kbps: Annotated[int, Field(ge=16)] | None = None
    speed: str | None = None  # x264/x265 preset name, or VP9 cpu-used / SVT-AV1 preset number
    fps_max: Annotated[float, Field(gt=0, le=240)] | None = None
    start_s: Annotated[float, Field(ge=0)] = 0.0
    max_duration_s: Annotated[float, Field(gt=0)] | None = None
    keyframe_s: Annotated[float, Field(gt=0, le=20)] = 2.0
    audio: Literal["aac", "opus", "none"] | None = None  # default per format: aac, opus, none
    audio_bitrate_kbps: Annotated[int, Field(ge=16, le=512)] = 128
    audio_sample_rate: Literal[44100, 48000] = 48000
    quality: Annotated[int, Field(ge=1, le=100)] = 75  # animated WebP only
    ladder: Annotated[list[Rung], Field(min_length=1)] | None = None
    hls: bool = False  # a ladder in mp4 also writes HLS playlists over fMP4 (video/hls.py)
    upscale: Upscale = "allow"
    # Set by rungs() on each concrete rung: the frame box of the next smaller rung of its ladder
    # ((None, None): it is the smallest). Not part of the recipe (branch.py uses it to decide
    # which rung a small master tops out at).
    _rung_below: tuple[int | None, int | None] | None = PrivateAttr(default=None)

    _check_bg = field_validator("background")(_check_colour)

    @property
    def master_kind(self) -> str:
        return "video"

    @property
    def animated(self) -> bool:
        return self.format in ANIMATED_FORMATS

    @property
    def effective_codec(self) -> str | None:
        if self.animated:
            return None
        return self.codec or VIDEO_CODECS_FOR[self.format][0]

    @property
    def effective_audio(self) -> str:
        return self.audio or AUDIO_FOR[self.format][0]

    @property
    def effective_crf(self) -> int | None:
        if self.animated or self.bitrate_kbps is not None:
            return None
        return self.crf if self.crf is not None else DEFAULT_CRF[self.effective_codec or "h264"]

    @property
    def effective_speed(self) -> str | None:
        if self.animated:
            return None
        return self.speed or DEFAULT_SPEED[self.effective_codec or "h264"]

    @property
    def effective_bufsize_kbps(self) -> int | None:
        if self.maxrate_kbps is None:
            return self.bufsize_kbps
        return self.bufsize_kbps or 2 * self.maxrate_kbps

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @model_validator(mode="after")
    def _consistent(self) -> VideoPreset:
        fmt, problems = self.format, []
        if self.codec is not None and self.codec not in VIDEO_CODECS_FOR[fmt]:
            allowed = (f"{_one_of(VIDEO_CODECS_FOR[fmt])} for format = {fmt!r}"
                       if VIDEO_CODECS_FOR[fmt]
                       else f"no codec for format = {fmt!r} (an animated image has none)")
            problems.append(f"codec: expected {allowed}; found {self.codec!r}")
        if self.audio is not None and self.audio not in AUDIO_FOR[fmt]:
            problems.append(f"audio: expected {_one_of(AUDIO_FOR[fmt])} for format = {fmt!r}; "
                            f"found {self.audio!r}")
        if self.resize.gravity == "attention":
            problems.append("resize.gravity: expected a fixed gravity (centre, north, ...) for a "
                            "video; found 'attention'")
        for where, w, h in ([("resize", self.resize.width, self.resize.height)]
                            + [(f"ladder[{i}]", r.width, r.height)
                               for i, r in enumerate(self.ladder or [])]):
            odd = [f"{k} = {v}" for k, v in (("width", w), ("height", h))
                   if v is not None and v % 2]
            if odd:
                problems.append(f"{where}: expected an even width and height (4:2:0 video); "
                                f"found {' and '.join(odd)}")
        if self.start_s and self.effective_audio != "none":
            problems.append(f"start_s: expected 0 unless audio = 'none' (a clip from inside a "
                            f"video has no audio); found {self.start_s:g} with audio = "
                            f"{self.effective_audio!r}")
        if self.crf is not None and self.bitrate_kbps is not None:
            problems.append(f"expected crf (constant quality) or bitrate_kbps (average), not "
                            f"both; found crf = {self.crf} and bitrate_kbps = {self.bitrate_kbps}")
        if self.bufsize_kbps is not None and self.maxrate_kbps is None:
            problems.append(f"expected maxrate_kbps with bufsize_kbps; "
                            f"found bufsize_kbps = {self.bufsize_kbps} only")
        if self.animated:
            if self.fps_max is None or self.max_duration_s is None:
                found = ("neither" if self.fps_max is None and self.max_duration_s is None
                         else f"fps_max = {self.fps_max:g} only" if self.fps_max is not None
                         else f"max_duration_s = {self.max_duration_s:g} only")
                problems.append(f"expected fps_max and max_duration_s for an animated {fmt}; "
                                f"found {found}")
            elif self.fps_max * self.max_duration_s > MAX_ANIMATION_FRAMES:
                problems.append(
                    f"expected at most {MAX_ANIMATION_FRAMES} frames (fps_max x max_duration_s) "
                    f"in an animated {fmt}; found {self.fps_max:g} x {self.max_duration_s:g} = "
                    f"{self.fps_max * self.max_duration_s:g}")
            for key in ("crf", "bitrate_kbps", "maxrate_kbps", "ladder"):
                value = getattr(self, key)
                if value is not None:
                    shown = f"{len(value)} rung(s)" if key == "ladder" else value
                    problems.append(f"{key}: expected no {key} in an animated {fmt}; "
                                    f"found {shown}")
        elif self.ladder is not None:
            for key, why in (("crf", "its rungs set bitrate_kbps"),
                             ("bitrate_kbps", "each rung sets its own")):
                if getattr(self, key) is not None:
                    problems.append(f"{key}: expected no {key} beside a ladder ({why}); "
                                    f"found {getattr(self, key)}")
            problems += _twice("ladder", "rung", [r.name for r in self.ladder])
            for i, rung in enumerate(self.ladder):
                sizes = [f"{k} = {v}" for k, v in (("width", rung.width), ("height", rung.height))
                         if v is not None]
                if self.resize.fit in ("fill", "pad") and len(sizes) < 2:
                    problems.append(f"ladder[{i}]: expected width and height for fit = "
                                    f"{self.resize.fit!r}; found "
                                    f"{sizes[0] + ' only' if sizes else 'neither'}")
        if self.hls and (self.ladder is None or fmt != "mp4"):
            problems.append(f"hls: expected a ladder and format = 'mp4' with hls = true; found "
                            f"{'no ladder' if self.ladder is None else f'format = {fmt!r}'}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def rungs(self) -> list[tuple[str | None, VideoPreset]]:
        """(rung name, concrete preset) for each rung of a ladder, or [(None, self)]."""
        if self.ladder is None:
            return [(None, self)]
        out = []
        for rung in self.ladder:
            resize = self.resize.model_copy(update={"width": rung.width, "height": rung.height})
            concrete = self.model_copy(update={
                "ladder": None, "hls": False, "resize": resize, "bitrate_kbps": rung.bitrate_kbps,
                "maxrate_kbps": rung.maxrate_kbps, "bufsize_kbps": rung.bufsize_kbps,
            })
            smaller = [r for r in self.ladder if _area(r) < _area(rung)]
            below = max(smaller, key=_area, default=None)
            concrete._rung_below = (None, None) if below is None else (below.width, below.height)
            out.append((rung.name, concrete))
        return out

    @property
    def rung_below(self) -> tuple[int | None, int | None] | None:
        """A ladder rung's next smaller rung's box ((None, None): none); None: not a rung."""
        return self._rung_below

    def audio_key(self) -> tuple | None:
        """What decides the encoded audio: outputs with one key share one audio encode."""
        if self.effective_audio == "none":
            return None
        return (self.effective_audio, self.audio_bitrate_kbps, self.audio_sample_rate,
                self.start_s, self.max_duration_s)

    def recipe(self) -> dict:
        data = self.model_dump(exclude={"description"} | (set() if self.hls else {"hls"})
                               | _default_upscale(self))
        data.update(codec=self.effective_codec, audio=self.effective_audio, crf=self.effective_crf,
                    speed=self.effective_speed, bufsize_kbps=self.effective_bufsize_kbps)
        return data


Preset = ImagePreset | VideoPreset
PRESET_KINDS: dict[str, type[ImagePreset | VideoPreset]] = {
    "image": ImagePreset, "video": VideoPreset,
}


class When(Strict):
    """Which masters an output applies to."""

    role: Literal["product", "editorial", "any"] = "any"
    position: int | str | list[int] | None = None
    tags: Annotated[list[str], Field(min_length=1)] | None = None  # any of these tags
    not_tags: Annotated[list[str], Field(min_length=1)] | None = None  # none of these

    @field_validator("position")
    @classmethod
    def _position(cls, value: int | str | list[int] | None) -> int | str | list[int] | None:
        if isinstance(value, str) and not re.fullmatch(r"\d+-\d+", value):
            raise ValueError("expected a position, a range like '1-8' or a list")
        if isinstance(value, str):
            lo, hi = (int(p) for p in value.split("-"))
            if lo > hi:
                raise ValueError(f"expected a range from low to high, like '1-8'; "
                                 f"found {value!r}")
        return value

    def matches(self, role: str, position: int, tags: tuple[str, ...] = ()) -> bool:
        if self.role != "any" and role != self.role:
            return False
        if self.tags is not None and not set(self.tags) & set(tags):
            return False
        if self.not_tags is not None and set(self.not_tags) & set(tags):
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
        reason = str(exc)[:1].lower() + str(exc)[1:]
        raise ValueError(f"expected a naming pattern like {DEFAULT_PATH!r}; "
                         f"found {pattern!r} ({reason})") from None
    for literal, field, spec, conversion in parsed:
        if field is None:
            continue
        shown = "{" + field + (f"!{conversion}" if conversion else "") + (
            f":{spec}" if spec else "") + "}"
        if field not in PATH_FIELDS:
            fields = ", ".join("{" + f + "}" for f in sorted(PATH_FIELDS))
            raise ValueError(f"expected only the fields {fields}; found {shown} in {pattern!r}")
        if conversion:
            raise ValueError(f"expected fields without a conversion (like !r); "
                             f"found {shown} in {pattern!r}")
        if spec and field != "position":
            raise ValueError(f"expected a format spec on {{position}} only; "
                             f"found {shown} in {pattern!r}")
        if spec and not re.fullmatch(r"0?\d{1,2}d?", spec):
            raise ValueError(f"expected a position format like {{position:02}}; "
                             f"found {shown} in {pattern!r}")
        del literal
    if pattern.startswith("/") or ".." in pattern.split("/"):
        raise ValueError(f"expected a path inside the output folder; found {pattern!r}")
    if not pattern.endswith(".{ext}"):  # so a file's name always says its format
        raise ValueError(f"expected a naming pattern ending in '.{{ext}}'; found {pattern!r}")
    return pattern


class Rules(Strict):
    """What a channel (or one of its outputs) accepts: checked against each preset at load time,
    on every encoded file before it is written, and by `fanout check`."""

    formats: list[AnyFormat] | None = None
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
    # Video outputs only (image rules above such as background and min_fill apply to images).
    codecs: list[VideoCodec] | None = None
    max_bitrate_kbps: Annotated[int, Field(ge=1)] | None = None
    max_duration_s: Annotated[float, Field(gt=0)] | None = None
    max_fps: Annotated[float, Field(gt=0)] | None = None
    # The master itself: its long side (oriented pixels) at least this (Amazon's zoom needs
    # 1000); below it a derivative fails, or with below_min_source = "skip" is recorded `n/a`.
    min_source_long_side: Annotated[int, Field(ge=1)] | None = None
    below_min_source: Literal["fail", "skip"] = "fail"

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
        problems = _twice("outputs", "output", [o.name for o in self.outputs])
        if problems:
            raise ValueError("\n".join(problems))
        return self


def recipe_hash(preset: Preset, engine_version: str) -> str:
    """Hash of everything that decides a derivative's bytes: the recipe and the engine."""
    payload = json.dumps(
        {"recipe": preset.recipe(), "engine": engine_version}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
