"""Load channel and preset files (TOML) once, with errors that name file, key, expected, found.

Built-in files ship inside the package (engine/builtin/ in a wheel, the repository's top-level
channels/ and presets/ in a checkout); `--config-dir` adds or overrides them by name.

Every problem is one line, `FILE: KEY.PATH: expected X; found Y` (KEY.PATH from the top of the
file), and a configuration's problems are all reported at once, in one ConfigError.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigProblems
from .models import PRESET_KINDS, Channel, Output, Preset, Rules, VideoPreset, _one_of


def _raise_if_any(problems: list[str]) -> None:
    """One ConfigError (a ConfigProblems) for every problem found, or nothing."""
    if problems:
        raise ConfigProblems(problems)


def _did_you_mean(word: str, names: Any) -> str:
    """", did you mean 'x'?" for the closest of `names`, or ""."""
    close = difflib.get_close_matches(word, sorted(names), n=1)
    return f", did you mean {close[0]!r}?" if close else ""


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


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
        known = ", ".join(sorted(self.channels)) or "none is configured"
        _raise_if_any([
            f"--channel: expected the name of a channel ({known}); "
            f"found unknown channel {name!r}{_did_you_mean(name, self.channels)}"
            for name in dict.fromkeys(names) if name not in self.channels
        ])
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
    part is kept when it names a missing or unknown key."""
    if data is None:
        return tuple(p for p in loc if not str(p).startswith("function-"))
    parts, node = [], data
    for i, part in enumerate(loc):
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            parts.append(part)
            node = node[part]
        elif keep_last and i == len(loc) - 1:
            parts.append(part)
    return tuple(parts)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field's type holds (Resize in `Resize | None`, Rung in `list[Rung]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model of the table at `loc` (a pydantic location) below `model`."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, str) and part in model.model_fields:
            model = _model_of(model.model_fields[part].annotation)
    return model


class _Nothing:
    """A value of no type at all: what a missing key's type refuses says what it expects."""

    def __repr__(self) -> str:
        return "nothing"


def _expected_for_missing(model: type[BaseModel] | None, key: Any) -> str:
    if model is None or key not in model.model_fields:
        return "a value"
    try:
        model.model_validate({key: _Nothing()})
    except ValidationError as exc:
        phrases = [_expected(e) for e in exc.errors() if e["loc"][:1] == (key,)
                   and e["type"] != "missing"]
        phrases = list(dict.fromkeys(phrases))
        if phrases:
            return phrases[0] if len(phrases) == 1 else (
                ", ".join(phrases[:-1]) + " or " + phrases[-1])
    return "a value"


_KEYED = re.compile(r"((?:[A-Za-z_]\w*|\[\d+\])(?:\.[A-Za-z_]\w*|\[\d+\])*): (expected .*)",
                    re.DOTALL)


def _join(loc: str, key: str) -> str:
    if not loc:
        return key
    return loc + key if key.startswith("[") else f"{loc}.{key}"


def _describe(exc: ValidationError, prefix: tuple[Any, ...] = (), data: Any = None,
              model: type[BaseModel] | None = None) -> list[str]:
    """One line per problem, each `KEY.PATH: expected X; found Y` (a union's alternatives in
    one line). `model` is what `data` was validated as (for the keys of a table)."""
    lines: list[tuple[str, str | None]] = []  # (key path, finished line or None: typed)
    typed: dict[str, tuple[list[str], Any]] = {}  # key path -> (expected phrases, found)
    for err in exc.errors():
        kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
        keep_last = kind in ("missing", "extra_forbidden")
        where = prefix + _where(err["loc"], data, keep_last=keep_last)
        loc = _format_loc(where)
        if kind == "extra_forbidden":
            key = str(err["loc"][-1])
            table = _model_at(model, err["loc"][:-1])
            keys = sorted(table.model_fields) if table is not None else []
            hint = _did_you_mean(key, keys)
            expected = "a known key" + ("" if hint or not keys else f" (one of {', '.join(keys)})")
            lines.append((loc, f"{loc}: expected {expected}; found unknown key {key!r}{hint}"))
        elif kind == "missing":
            table = _model_at(model, err["loc"][:-1])
            expected = _expected_for_missing(table, err["loc"][-1])
            lines.append((loc, f"{loc}: expected {expected}; found nothing (the key is required)"))
        elif kind == "value_error" and ("; found " in msg or "\n" in msg
                                        or not msg.startswith("expected ")):
            # a check's own lines, complete: about this table or value, or one of its keys
            base = _format_loc(where) if where else ""
            for line in msg.split("\n"):
                keyed = _KEYED.fullmatch(line)
                at = _join(base, keyed.group(1)) if keyed else base
                text = keyed.group(2) if keyed else line
                if "; found " not in text:
                    text += f"; found {err['input']!r}"
                lines.append((at or "(top level)", f"{at or '(top level)'}: {text}"))
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


def _read_dir(root: Path, problems: list[str]) -> list[ConfigFile]:
    files = []
    for kind in ("presets", "channels"):
        for path in sorted((root / kind).glob("*.toml")):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                problems.append(f"{path}: (file): expected a file it can read; "
                                f"found {exc.strerror or exc}")
                continue
            except UnicodeDecodeError as exc:
                problems.append(f"{path}: (file): expected UTF-8 text; found byte "
                                f"0x{exc.object[exc.start:exc.start + 1].hex()} at offset "
                                f"{exc.start}")
                continue
            files.append(ConfigFile(kind, path.name, text, str(path)))
    return files


def read_files(root: Path) -> list[ConfigFile]:
    """The channels/*.toml and presets/*.toml below `root`, in name order."""
    problems: list[str] = []
    files = _read_dir(root, problems)
    _raise_if_any(problems)
    return files


_TOML_AT = re.compile(r"(.*) \(at (?:line (\d+), column (\d+)|end of document)\)", re.DOTALL)


def _toml_problem(file: ConfigFile, exc: tomllib.TOMLDecodeError) -> str:
    """`FILE: line L, column C: expected valid TOML; found ...` for a syntax error."""
    match = _TOML_AT.fullmatch(str(exc))
    if match is None:
        return f"{file}: (file): expected valid TOML; found {exc}"
    reason, line, column = match.groups()
    text = file.text.splitlines()
    if line is None:
        where, found = f"line {max(len(text), 1)}", "the end of the file"
        what = reason
    else:
        where = f"line {line}, column {column}"
        source = text[int(line) - 1] if int(line) <= len(text) else ""
        rest = source[int(column) - 1:].strip() if reason.startswith("Expected ") else ""
        found = (repr(rest[:40]) if rest else "the end of the line"
                 ) if reason.startswith("Expected ") else repr(source.strip()[:60])
        what = reason
    if what.startswith("Expected "):
        return f"{file}: {where}: expected valid TOML ({what.removeprefix('Expected ')}); " \
               f"found {found}"
    return f"{file}: {where}: expected valid TOML; found {found} ({what[:1].lower()}{what[1:]})"


def _read_toml(file: ConfigFile, problems: list[str]) -> dict[str, Any] | None:
    try:
        return tomllib.loads(file.text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(_toml_problem(file, exc))
        return None


@dataclass
class _Presets:
    """The presets that loaded, and what is known of the ones that did not."""

    presets: dict[str, Preset]
    broken: set[str]  # named in a file, refused: a channel naming one is not told it is unknown
    complete: bool = True  # False when a presets file could not be read: names may be missing


def _load_presets(files: list[ConfigFile], sources: dict[str, str],
                  problems: list[str]) -> _Presets:
    out = _Presets({}, set())
    for path in (f for f in files if f.kind == "presets"):
        data = _read_toml(path, problems)
        if data is None:
            out.complete = False
            continue
        for name, table in data.items():
            out.presets.pop(name, None)  # a broken override hides the layer below too
            out.broken.add(name)
            if not isinstance(table, dict):
                problems.append(f"{path}: {name}: expected a table [{name}] describing a "
                                f"preset; found {table!r}")
                continue
            kind = table.get("kind", "image")
            if not isinstance(kind, str) or kind not in PRESET_KINDS:
                problems.append(f"{path}: {name}.kind: expected {_one_of(sorted(PRESET_KINDS))}; "
                                f"found {kind!r}")
                continue
            model = PRESET_KINDS[kind]
            try:
                preset = model.model_validate(table)
            except ValidationError as exc:
                problems.extend(f"{path}: {line}"
                                for line in _describe(exc, (name,), table, model))
                continue
            out.presets[name] = preset
            out.broken.discard(name)
            sources[f"preset:{name}"] = str(path)
    return out


def _load_channels(files: list[ConfigFile], sources: dict[str, str],
                   problems: list[str]) -> dict[str, Channel]:
    channels: dict[str, Channel] = {}
    for path in (f for f in files if f.kind == "channels"):
        data = _read_toml(path, problems)
        if data is None:
            continue
        stem = path.name.removesuffix(".toml")
        try:
            channel = Channel.model_validate(data)
        except ValidationError as exc:
            channels.pop(stem, None)  # a broken override hides the layer below too
            problems.extend(f"{path}: {line}" for line in _describe(exc, (), data, Channel))
            name = data.get("name")
            if isinstance(name, str) and name != stem and not any(
                line.startswith(f"{path}: name:") for line in problems
            ):
                problems.append(f"{path}: name: expected the file's name {stem!r}; "
                                f"found {name!r}")
            continue
        if channel.name != stem:
            problems.append(f"{path}: name: expected the file's name {stem!r}; "
                            f"found {channel.name!r}")
        channels[stem] = channel
        sources[f"channel:{stem}"] = str(path)
    return channels


def _rule(output: Output, index: int, *keys: str) -> str:
    """Where a rule an output must meet is set: its own rules, or the channel's."""
    own = output.rules.model_fields_set if output.rules is not None else set()
    return ", ".join(f"outputs[{index}].rules.{k}" if k in own else f"rules.{k}" for k in keys)


def _check_channel(channel: Channel, known: _Presets, source: str) -> list[str]:
    """Each output's preset against the channel's rules, as far as the recipe decides them."""
    problems: list[str] = []
    for i, output in enumerate(channel.outputs):
        where = f"{source}: outputs[{i}].preset"
        name = output.preset
        preset = known.presets.get(name)
        if preset is None:
            if name not in known.broken and known.complete:  # else: already reported
                hint = (_did_you_mean(name, set(known.presets) | known.broken)
                        or ", which no presets/*.toml defines")
                problems.append(f"{where}: expected the name of a preset; found {name!r}{hint}")
            continue

        def refuse(expected: str, has: str, *keys: str, i: int = i, output: Output = output,
                   where: str = where, name: str = name) -> None:
            problems.append(f"{where}: expected a preset {expected} (per "
                            f"{_rule(output, i, *keys)}); found {name!r}, {has}")

        rules = channel.rules_for(output)
        if preset.kind == "video":
            _check_video(preset, rules, refuse)
        if rules.formats is not None and preset.format not in rules.formats:
            refuse(f"in format {_one_of(rules.formats)}", f"which makes {preset.format!r}",
                   "formats")
        long_side = max(preset.resize.width or 0, preset.resize.height or 0)
        if preset.resize.fit in ("fill", "pad") and rules.min_long_side and (
            long_side < rules.min_long_side
        ):
            refuse(f"with a long side of at least {rules.min_long_side}",
                   f"which makes {long_side}", "min_long_side")
        if rules.max_long_side and long_side > rules.max_long_side:
            refuse(f"with a long side of at most {rules.max_long_side}",
                   f"which makes {long_side}", "max_long_side")
        if preset.kind == "video":
            continue  # byte limits, background and fill are checked on the rendered video
        if rules.max_bytes and (preset.max_bytes is None or preset.max_bytes > rules.max_bytes):
            refuse(f"with max_bytes <= {rules.max_bytes}",
                   "which has no max_bytes" if preset.max_bytes is None
                   else f"which has max_bytes = {preset.max_bytes}", "max_bytes")
        if rules.background and preset.background != rules.background:
            refuse(f"with background {rules.background!r}",
                   f"which has {preset.background!r}", "background")
        r = preset.resize
        if r.fit in ("fill", "pad") and r.width and r.height and not (
            (rules.min_aspect or 0) * 0.99 <= r.width / r.height <= (rules.max_aspect or 1e9) * 1.01
        ):
            lo, hi = rules.min_aspect, rules.max_aspect
            span = (f"from {_num(lo)} to {_num(hi)}" if lo and hi
                    else f"of at least {_num(lo)}" if lo else f"of at most {_num(hi)}")
            keys = [k for k, v in (("min_aspect", lo), ("max_aspect", hi)) if v]
            refuse(f"with an aspect (width / height) {span}",
                   f"which makes {r.width}x{r.height} ({r.width / r.height:.3g})", *keys)
        if rules.min_fill and (preset.resize.fill_ratio or 0) < rules.min_fill:
            refuse(f"with fill_ratio >= {_num(rules.min_fill)}",
                   "which has no fill_ratio" if preset.resize.fill_ratio is None
                   else f"which has fill_ratio = {_num(preset.resize.fill_ratio)}", "min_fill")
    return problems


def _check_video(preset: VideoPreset, rules: Rules, refuse: Any) -> None:
    """A video preset against the rules it must meet, as far as the recipe decides them."""
    codec = preset.effective_codec
    if rules.codecs is not None and codec is not None and codec not in rules.codecs:
        refuse(f"with codec {_one_of(rules.codecs)}", f"which makes {codec!r}", "codecs")
    if rules.max_fps is not None and (preset.fps_max is None or preset.fps_max > rules.max_fps):
        refuse(f"with fps_max <= {_num(rules.max_fps)}",
               "which has no fps_max" if preset.fps_max is None
               else f"which has fps_max = {_num(preset.fps_max)}", "max_fps")
    if rules.max_duration_s is not None and (
        preset.max_duration_s is None or preset.max_duration_s > rules.max_duration_s
    ):
        refuse(f"with max_duration_s <= {_num(rules.max_duration_s)}",
               "which has no max_duration_s" if preset.max_duration_s is None
               else f"which has max_duration_s = {_num(preset.max_duration_s)}",
               "max_duration_s")
    if rules.max_bitrate_kbps is not None:
        for rung_name, rung in preset.rungs():
            cap = rung.maxrate_kbps or rung.bitrate_kbps
            if cap is None or cap > rules.max_bitrate_kbps:
                whose = "which has" if rung_name is None else f"whose rung {rung_name!r} has"
                has = (f"{whose} maxrate_kbps = {rung.maxrate_kbps}" if rung.maxrate_kbps
                       else f"{whose} bitrate_kbps = {rung.bitrate_kbps}" if rung.bitrate_kbps
                       else f"{whose} neither")
                refuse(f"with maxrate_kbps (or bitrate_kbps) <= {rules.max_bitrate_kbps}",
                       has, "max_bitrate_kbps")


def load_config(config_dir: Path | str | None = None) -> Config:
    """Built-in channels and presets, then a user's config_dir on top (same name overrides)."""
    problems: list[str] = []
    files = _read_dir(builtin_dir(), problems)
    if config_dir is not None:
        extra = Path(config_dir)
        if not extra.is_dir():
            what = "which is not a folder" if extra.exists() else "which does not exist"
            raise ConfigProblems(["--config-dir: expected a folder of channels/ and presets/; "
                                  + f"found {str(extra)!r}, {what}"])
        files += _read_dir(extra, problems)
    return load_files(files, problems)


def load_files(files: list[ConfigFile], problems: list[str] | None = None) -> Config:
    """A configuration from its files, in layer order (a later file's names override); every
    problem found (`problems`: ones found before, such as files that could not be read) is
    reported at once, in one ConfigError."""
    problems = list(problems or [])
    sources: dict[str, str] = {}
    known = _load_presets(files, sources, problems)
    channels = _load_channels(files, sources, problems)
    for name, channel in channels.items():
        problems += _check_channel(channel, known, sources[f"channel:{name}"])
    _raise_if_any(problems)
    return Config(channels=channels, presets=known.presets, sources=sources, files=tuple(files))
