"""Load channel and preset files (TOML) once, with errors that name file, key, expected, found.

Built-in files ship inside the package (engine/builtin/ in a wheel, the repository's top-level
channels/ and presets/ in a checkout); `--config-dir` adds or overrides them by name.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from .models import PRESET_KINDS, Channel, Preset, Rules, VideoPreset


@dataclass(frozen=True)
class Config:
    """Validated channels and the presets they use; nothing downstream re-reads files."""

    channels: dict[str, Channel]
    presets: dict[str, Preset]
    sources: dict[str, str]  # "channel:NAME" / "preset:NAME" -> file it came from
    files: tuple[ConfigFile, ...] = ()  # what it was loaded from, in layer order

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[Channel]:
        if not names:
            return [self.channels[n] for n in sorted(self.channels)]
        unknown = [n for n in names if n not in self.channels]
        if unknown:
            raise ConfigError(
                f"unknown channel {', '.join(map(repr, unknown))}; "
                f"available: {', '.join(sorted(self.channels))}"
            )
        return [self.channels[n] for n in dict.fromkeys(names)]


def builtin_dir() -> Path:
    packaged = Path(str(resources.files("engine"))) / "builtin"
    if (packaged / "channels").is_dir():
        return packaged
    return Path(__file__).resolve().parents[2]  # a source checkout: the repository root


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


# What a value should have been, by pydantic error type (types are strict: nothing is coerced).
_EXPECTED_TYPE = {
    "int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
    "string_type": "a string", "list_type": "a list", "model_type": "a table",
    "dict_type": "a table", "model_attributes_type": "a table",
}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"),
           "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}


def _expected(err: dict[str, Any]) -> str:
    """What `err` says was expected, as a phrase without 'expected' ("an integer")."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _EXPECTED_TYPE:
        return _EXPECTED_TYPE[kind]
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return f"a number {op} {ctx[key]}"
    if kind == "literal_error":
        return f"one of {ctx['expected']}" if " or " in ctx["expected"] else ctx["expected"]
    if kind == "string_pattern_mismatch":
        return f"a name matching {ctx['pattern']}"
    if kind == "too_short":
        return f"at least {ctx['min_length']} item(s)"
    msg = err["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
    msg = msg.removeprefix("expected ")
    return msg[:1].lower() + msg[1:]


def _where(loc: tuple[Any, ...], data: Any, keep_last: bool) -> tuple[Any, ...]:
    """`loc` as key path in the file: the parts found in `data` (pydantic also puts a union
    member's tag, like 'int' or "literal['best']", and validator names in a location); the last
    part is kept when it names a missing key."""
    if data is None:
        return tuple(p for p in loc if not str(p).startswith("function-"))
    parts, node = [], data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            parts.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            parts.append(part)
            node = node[part]
        elif keep_last and i == len(loc) - 1:
            parts.append(part)
    return tuple(parts)


def _describe(exc: ValidationError, prefix: tuple[Any, ...] = (), data: Any = None) -> list[str]:
    """One line per wrong key: `KEY: expected WHAT; found VALUE` (a union's alternatives in
    one line), `KEY: unknown key (found VALUE)`, `KEY: missing required key`, or a check's own
    message as it is (when it does not start with "expected", or already says what it found)."""
    lines: list[tuple[str, str | None]] = []  # (key path, finished line or None: typed)
    typed: dict[str, tuple[list[str], Any]] = {}  # key path -> (expected phrases, found)
    for err in exc.errors():
        kind = err["type"]
        loc = _format_loc(prefix + _where(err["loc"], data, keep_last=kind == "missing"))
        if kind == "extra_forbidden":
            lines.append((loc, f"{loc}: unknown key (found {err['input']!r})"))
        elif kind == "missing":
            lines.append((loc, f"{loc}: missing required key"))
        elif kind == "value_error" and (
            "found" in err["msg"] or not err["msg"].startswith("Value error, expected ")
        ):  # a check's own message, complete as it is
            lines.append((loc, f"{loc}: {err['msg'].removeprefix('Value error, ')}"))
        elif loc in typed:  # another alternative of a union: same key, same value
            typed[loc][0].append(_expected(err))
        else:
            typed[loc] = ([_expected(err)], err["input"])
            lines.append((loc, None))
    out = []
    for loc, line in lines:
        if line is None:
            if any(other.startswith((loc + ".", loc + "[")) for other, _ in lines):
                continue  # a union whose table or list alternative failed deeper: say that
            phrases, found = typed[loc]
            phrases = list(dict.fromkeys(phrases))
            expected = (", ".join(phrases[:-1]) + " or " + phrases[-1] if len(phrases) > 1
                        else phrases[0])
            line = f"{loc}: expected {expected}; found {found!r}"
        out.append(line)
    return out


@dataclass(frozen=True)
class ConfigFile:
    """One channel or preset file as read: what a run's configuration is made of, and what OUT
    stores so that a later run can use the same configuration."""

    kind: str  # "channels" or "presets"
    name: str  # the file's name, e.g. "amazon.toml"
    text: str
    origin: str  # where it was read from, for messages

    def __str__(self) -> str:
        return self.origin


def read_files(root: Path) -> list[ConfigFile]:
    """The channels/*.toml and presets/*.toml below `root`, in name order."""
    files = []
    for kind in ("presets", "channels"):
        for path in sorted((root / kind).glob("*.toml")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError(f"{path}: cannot read: {reason}") from None
            files.append(ConfigFile(kind, path.name, text, str(path)))
    return files


def _read_toml(file: ConfigFile) -> dict[str, Any]:
    try:
        return tomllib.loads(file.text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None


def _load_presets(files: list[ConfigFile], presets: dict[str, Preset],
                  sources: dict[str, str]) -> None:
    for path in (f for f in files if f.kind == "presets"):
        data = _read_toml(path)
        for name, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(
                    f"{path}: {name}: expected a table [{name}] describing a preset; "
                    f"found {table!r}"
                )
            kind = table.get("kind", "image")
            if kind not in PRESET_KINDS:
                raise ConfigError(
                    f"{path}: {name}.kind: expected one of {sorted(PRESET_KINDS)}; found {kind!r}"
                )
            try:
                presets[name] = PRESET_KINDS[kind].model_validate(table)
            except ValidationError as exc:
                raise ConfigError(
                    f"{path}: " + "; ".join(_describe(exc, (name,), table))
                ) from None
            sources[f"preset:{name}"] = str(path)


def _load_channels(files: list[ConfigFile], channels: dict[str, Channel],
                   sources: dict[str, str]) -> None:
    for path in (f for f in files if f.kind == "channels"):
        data = _read_toml(path)
        try:
            channel = Channel.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: " + "; ".join(_describe(exc, (), data))) from None
        stem = path.name.removesuffix(".toml")
        if channel.name != stem:
            raise ConfigError(
                f"{path}: name: expected the file's name {stem!r}; found {channel.name!r}"
            )
        channels[channel.name] = channel
        sources[f"channel:{channel.name}"] = str(path)


def _check_channel(channel: Channel, presets: dict[str, Preset], source: str) -> None:
    for i, output in enumerate(channel.outputs):
        where = f"{source}: outputs[{i}]"
        preset = presets.get(output.preset)
        if preset is None:
            raise ConfigError(
                f"{where}.preset: expected the name of a preset; found {output.preset!r}, "
                f"which no presets/*.toml defines"
            )
        rules = channel.rules_for(output)
        if preset.kind == "video":
            _check_video(preset, rules, f"{where}.preset", output.preset)
        if rules.formats is not None and preset.format not in rules.formats:
            raise ConfigError(
                f"{where}.preset: channel rules allow formats {rules.formats}; "
                f"preset {output.preset!r} makes {preset.format!r}"
            )
        long_side = max(preset.resize.width or 0, preset.resize.height or 0)
        if preset.resize.fit in ("fill", "pad") and rules.min_long_side and (
            long_side < rules.min_long_side
        ):
            raise ConfigError(
                f"{where}.preset: channel rules need a long side of at least "
                f"{rules.min_long_side}; preset {output.preset!r} makes {long_side}"
            )
        if rules.max_long_side and long_side > rules.max_long_side:
            raise ConfigError(
                f"{where}.preset: channel rules allow a long side of at most "
                f"{rules.max_long_side}; preset {output.preset!r} makes {long_side}"
            )
        if preset.kind == "video":
            continue  # byte limits, background and fill are checked on the rendered video
        if rules.max_bytes and (preset.max_bytes is None or preset.max_bytes > rules.max_bytes):
            raise ConfigError(
                f"{where}.preset: channel rules allow at most {rules.max_bytes} bytes; preset "
                f"{output.preset!r} needs max_bytes <= {rules.max_bytes} (found {preset.max_bytes})"
            )
        if rules.background and preset.background != rules.background:
            raise ConfigError(
                f"{where}.preset: channel rules need background {rules.background}; preset "
                f"{output.preset!r} has {preset.background}"
            )
        r = preset.resize
        if r.fit in ("fill", "pad") and r.width and r.height and not (
            (rules.min_aspect or 0) * 0.99 <= r.width / r.height <= (rules.max_aspect or 1e9) * 1.01
        ):
            raise ConfigError(
                f"{where}.preset: channel rules allow aspect {rules.min_aspect}..{rules.max_aspect}"
                f"; preset {output.preset!r} makes {r.width}x{r.height}"
            )
        if rules.min_fill and (preset.resize.fill_ratio or 0) < rules.min_fill:
            raise ConfigError(
                f"{where}.preset: channel rules need the product to fill at least "
                f"{rules.min_fill}; preset {output.preset!r} has fill_ratio "
                f"{preset.resize.fill_ratio}"
            )


def _check_video(preset: VideoPreset, rules: Rules, where: str, name: str) -> None:
    """A video preset against the rules it must meet, as far as the recipe decides them."""
    codec = preset.effective_codec
    if rules.codecs is not None and codec is not None and codec not in rules.codecs:
        raise ConfigError(f"{where}: channel rules allow codecs {rules.codecs}; "
                          f"preset {name!r} makes {codec!r}")
    if rules.max_fps is not None and (preset.fps_max is None or preset.fps_max > rules.max_fps):
        raise ConfigError(f"{where}: channel rules allow at most {rules.max_fps} fps; preset "
                          f"{name!r} needs fps_max <= {rules.max_fps} (found {preset.fps_max})")
    if rules.max_duration_s is not None and (
        preset.max_duration_s is None or preset.max_duration_s > rules.max_duration_s
    ):
        raise ConfigError(
            f"{where}: channel rules allow at most {rules.max_duration_s} s; preset {name!r} "
            f"needs max_duration_s <= {rules.max_duration_s} (found {preset.max_duration_s})"
        )
    if rules.max_bitrate_kbps is not None:
        for _, rung in preset.rungs():
            cap = rung.maxrate_kbps or rung.bitrate_kbps
            if cap is None or cap > rules.max_bitrate_kbps:
                raise ConfigError(
                    f"{where}: channel rules allow at most {rules.max_bitrate_kbps} kbps; "
                    f"preset {name!r} needs maxrate_kbps (or bitrate_kbps) <= "
                    f"{rules.max_bitrate_kbps} (found {cap})"
                )


def load_config(config_dir: Path | str | None = None) -> Config:
    """Built-in channels and presets, then a user's config_dir on top (same name overrides)."""
    files = read_files(builtin_dir())
    if config_dir is not None:
        extra = Path(config_dir)
        if not extra.is_dir():
            raise ConfigError(f"{extra}: config dir does not exist or is not a folder")
        files += read_files(extra)
    return load_files(files)


def load_files(files: list[ConfigFile]) -> Config:
    """A configuration from its files, in layer order (a later file's names override)."""
    presets: dict[str, Preset] = {}
    channels: dict[str, Channel] = {}
    sources: dict[str, str] = {}
    _load_presets(files, presets, sources)
    _load_channels(files, channels, sources)
    for name, channel in channels.items():
        _check_channel(channel, presets, sources[f"channel:{name}"])
    return Config(channels=channels, presets=presets, sources=sources, files=tuple(files))
