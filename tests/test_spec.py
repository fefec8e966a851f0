from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.spec import load_config


def write(root: Path, kind: str, name: str, text: str) -> Path:
    folder = root / kind
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def test_builtin_channels_load_with_their_outputs():
    config = load_config()
    assert set(config.channels) >= {"instagram", "amazon", "email", "mobile", "web"}
    amazon = config.channels["amazon"]
    images = [o for o in amazon.outputs if config.presets[o.preset].master_kind == "image"]
    assert [o.path for o in images] == ["{product}.MAIN.{ext}", "{product}.PT{position:02}.{ext}"]
    mobile = [o for o in config.channels["mobile"].outputs
              if config.presets[o.preset].master_kind == "image"]
    widths = {config.presets[o.preset].resize.width for o in mobile}
    formats = {config.presets[o.preset].format for o in mobile}
    assert widths == {320, 640, 828, 1080, 1440} and formats == {"avif", "webp", "jpeg"}
    email = [config.presets[o.preset] for o in config.channels["email"].outputs
             if config.presets[o.preset].master_kind == "image"]
    assert [(p.resize.width, p.progressive, p.max_bytes) for p in email] == [
        (600, True, 60000), (1200, True, 150000)]
    # every channel the video issue names has video outputs for video masters
    for name in ("instagram", "mobile", "amazon", "email"):
        kinds = {config.presets[o.preset].kind for o in config.channels[name].outputs
                 if config.presets[o.preset].master_kind == "video"}
        assert kinds == {"video", "image"}, name  # a video (or animation) and a poster


def test_unknown_key_names_file_key_and_value(tmp_path):
    path = write(tmp_path, "presets", "mine", """
[sq]
resize = { width = 100, height = 100, fit = "fill" }
format = "jpeg"
qualty = 80
""")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    message = str(err.value)
    assert str(path) in message and "sq.qualty" in message and "unknown key" in message


def test_bad_value_says_expected_and_found(tmp_path):
    path = write(tmp_path, "presets", "mine", """
[sq]
resize = { width = 100, height = 100, fit = "stretch" }
format = "jpeg"
""")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    message = str(err.value)
    assert str(path) in message and "sq.resize.fit" in message
    assert "expected" in message and "'stretch'" in message


def test_channel_naming_a_missing_preset_is_an_error(tmp_path):
    path = write(tmp_path, "channels", "shop", """
name = "shop"
[[outputs]]
name = "big"
preset = "no-such-preset"
""")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(path) in str(err.value) and "outputs[0].preset" in str(err.value)
    assert "no-such-preset" in str(err.value)


def test_preset_breaking_channel_rules_is_an_error(tmp_path):
    write(tmp_path, "presets", "p", """
[webp-square]
resize = { width = 2000, height = 2000, fit = "pad", fill_ratio = 0.9 }
format = "webp"
""")
    path = write(tmp_path, "channels", "market", """
name = "market"
[[outputs]]
name = "main"
preset = "webp-square"
[rules]
formats = ["jpeg"]
""")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(path) in str(err.value) and "'webp'" in str(err.value)


@pytest.mark.parametrize("pattern", ["../{id}.{ext}", "/abs/{id}.{ext}", "{id.__class__}.{ext}",
                                     "{secret}.{ext}", "{id}"])
def test_unsafe_or_unknown_naming_patterns_are_rejected(tmp_path, pattern):
    write(tmp_path, "channels", "shop", f"""
name = "shop"
[[outputs]]
name = "big"
preset = "email-600"
path = "{pattern}"
""")
    with pytest.raises(ConfigError, match="outputs"):
        load_config(tmp_path)


def test_invalid_toml_and_inconsistent_preset(tmp_path):
    write(tmp_path, "presets", "broken", "[a\nformat=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path)
    (tmp_path / "presets" / "broken.toml").write_text("""
[p]
resize = { width = 100, fit = "fill" }
format = "png"
""")
    with pytest.raises(ConfigError, match="needs both width and height"):
        load_config(tmp_path)


def test_config_dir_overrides_a_builtin_preset(tmp_path):
    write(tmp_path, "presets", "email", """
[email-600]
resize = { width = 640, fit = "fit" }
format = "jpeg"
max_bytes = 50000
""")
    config = load_config(tmp_path)
    assert config.presets["email-600"].resize.width == 640
