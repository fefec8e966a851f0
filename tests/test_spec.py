
import pytest
from helpers import write_config as write

from engine.errors import ConfigError
from engine.spec import load_config


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


def test_unknown_key_names_file_and_key_and_suggests_the_known_one(tmp_path):
    path = write(tmp_path, "presets", "mine", """
[sq]
resize = { width = 100, height = 100, fit = "fill" }
format = "jpeg"
qualty = 80
""")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(err.value) == (f"{path}: sq.qualty: expected a known key; found unknown key "
                              "'qualty', did you mean 'quality'?")


def test_bad_value_says_expected_and_found(tmp_path):
    path = write(tmp_path, "presets", "mine", """
[sq]
resize = { width = 100, height = 100, fit = "stretch" }
format = "jpeg"
""")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(err.value) == (f"{path}: sq.resize.fit: expected one of 'fill', 'fit', 'pad' "
                              "or 'limit'; found 'stretch'")


def test_channel_naming_a_missing_preset_is_an_error(tmp_path):
    path = write(tmp_path, "channels", "shop", """
name = "shop"
[[outputs]]
name = "big"
preset = "no-such-preset"
""")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(err.value) == (f"{path}: outputs[0].preset: expected the name of a preset; "
                              "found 'no-such-preset', which no presets/*.toml defines")


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
    assert str(err.value) == (f"{path}: outputs[0].preset: expected a preset in format 'jpeg' "
                              "(per rules.formats); found 'webp-square', which makes 'webp'")


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
    path = write(tmp_path, "presets", "broken", "[a\nformat=")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(err.value) == (f"{path}: line 1, column 3: expected valid TOML (']' at the end "
                              "of a table declaration); found the end of the line")
    path.write_text("""
[p]
resize = { width = 100, fit = "fill" }
format = "png"
""")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(err.value) == (f"{path}: p.resize: expected width and height for fit = 'fill'; "
                              "found width = 100 only")


def test_config_dir_overrides_a_builtin_preset(tmp_path):
    write(tmp_path, "presets", "email", """
[email-600]
resize = { width = 640, fit = "fit" }
format = "jpeg"
max_bytes = 50000
""")
    config = load_config(tmp_path)
    assert config.presets["email-600"].resize.width == 640
