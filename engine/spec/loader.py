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


def _describe(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = _format_loc(prefix + tuple(p for p in err["loc"] if not str(p).startswith("function-")))
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key (found {err['input']!r})")
        elif err["type"] == "missing":
            lines.append(f"{loc}: missing required key")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: expected {msg[0].lower() + msg[1:]}; found {err['input']!r}")
    return lines


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _load_presets(folder: Path, presets: dict[str, Preset], sources: dict[str, str]) -> None:
    for path in sorted(folder.glob("*.toml")):
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
                raise ConfigError(f"{path}: " + "; ".join(_describe(exc, (name,)))) from None
            sources[f"preset:{name}"] = str(path)


def _load_channels(folder: Path, channels: dict[str, Channel], sources: dict[str, str]) -> None:
    for path in sorted(folder.glob("*.toml")):
        data = _read_toml(path)
        try:
            channel = Channel.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: " + "; ".join(_describe(exc))) from None
        if channel.name != path.stem:
            raise ConfigError(
                f"{path}: name: expected the file's name {path.stem!r}; found {channel.name!r}"
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
    presets: dict[str, Preset] = {}
    channels: dict[str, Channel] = {}
    sources: dict[str, str] = {}
    roots = [builtin_dir()]
    if config_dir is not None:
        extra = Path(config_dir)
        if not extra.is_dir():
            raise ConfigError(f"{extra}: config dir does not exist or is not a folder")
        roots.append(extra)
    for root in roots:
        _load_presets(root / "presets", presets, sources)
    for root in roots:
        _load_channels(root / "channels", channels, sources)
    for name, channel in channels.items():
        _check_channel(channel, presets, sources[f"channel:{name}"])
    return Config(channels=channels, presets=presets, sources=sources)
