"""A configuration as OUT keeps it: the channel and preset files a run used, so that a later run
or `fanout check` without `--config-dir` works with the same channels and presets instead of
silently undoing the outputs OUT was made with.

Stored as OUT/_config/<hash>.json (content-addressed: a night with the same configuration
writes nothing new), named by the manifest's metadata.
"""

from __future__ import annotations

import hashlib
import json

from ..errors import ConfigError
from .loader import Config, ConfigFile, load_files

CONFIG_DIR = "_config"


def encode(config: Config) -> tuple[str, bytes]:
    """(relative path under OUT, bytes) of the configuration's snapshot."""
    doc = {"files": [{"kind": f.kind, "name": f.name, "text": f.text, "origin": f.origin}
                     for f in config.files]}
    data = json.dumps(doc, indent=1, sort_keys=True).encode()
    return f"{CONFIG_DIR}/{hashlib.sha256(data).hexdigest()[:16]}.json", data


def decode(data: bytes, where: str) -> Config:
    """The configuration a snapshot holds (validated again: files are data, not trusted)."""
    try:
        files = [ConfigFile(f["kind"], f["name"], f["text"], f"{where} ({f['origin']})")
                 for f in json.loads(data)["files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: not a fanout configuration snapshot ({exc}); pass "
                          "--config-dir, or --reset-config for the built-in one") from None
    return load_files(files)


def differences(stored: Config, current: Config) -> list[str]:
    """What differs between two configurations, by channel and preset name."""
    out = []
    for what, a, b in (("channel", stored.channels, current.channels),
                       ("preset", stored.presets, current.presets)):
        for name in sorted(set(a) | set(b)):
            if name not in b:
                out.append(f"{what} {name!r} only in OUT's")
            elif name not in a:
                out.append(f"{what} {name!r} only in the built-in/--config-dir one")
            elif a[name] != b[name]:
                out.append(f"{what} {name!r} differs")
    return out
