"""Channel and preset files are typed strictly: a value of the wrong type is refused with a
message naming the file, the key path, what was expected and what was found; never coerced."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_config as write

from engine.errors import ConfigError
from engine.spec import load_config

SQUARE = 'resize = { width = 100, height = 100, fit = "fill" }\n'




def error_of(root: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(root)
    return str(err.value)


# (preset table body, the whole message after "FILE: ")
WRONG_TYPES = [
    (SQUARE + 'format = "jpeg"\nquality = "92"',
     "sq.quality: expected an integer or 'auto'; found '92'"),
    (SQUARE + 'format = "jpeg"\nquality = 92.0',
     "sq.quality: expected an integer or 'auto'; found 92.0"),
    ('resize = { width = "100", fit = "fit" }\nformat = "jpeg"',
     "sq.resize.width: expected an integer; found '100'"),
    (SQUARE + 'format = "jpeg"\nprogressive = "yes"',
     "sq.progressive: expected true or false; found 'yes'"),
    (SQUARE + 'format = "jpeg"\nprogressive = 1',
     "sq.progressive: expected true or false; found 1"),
    (SQUARE + 'format = "jpeg"\ntrim = { threshold = "10" }',
     "sq.trim.threshold: expected a number; found '10'"),
    (SQUARE + 'format = "jpeg"\ntrim = "10"',
     "sq.trim: expected a table; found '10'"),
    (SQUARE + 'format = "jpeg"\nbackground = "red"',
     "sq.background: expected a colour like '#ffffff'; found 'red'"),
    (SQUARE + 'format = "jpeg"\nbackground = 16777215',
     "sq.background: expected a string; found 16777215"),
    (SQUARE + 'format = "jpeg"\ndescription = 5',
     "sq.description: expected a string; found 5"),
    ('resize = { width = 100, height = 100, fit = "stretch" }\nformat = "jpeg"',
     "sq.resize.fit: expected one of 'fill', 'fit', 'pad' or 'limit'; found 'stretch'"),
    (SQUARE + 'format = "jpeg"\nquality = 0',
     "sq.quality: expected a number >= 1 or 'auto'; found 0"),
    (SQUARE + 'format = "jpeg"\nframe = "worst"',
     "sq.frame: expected a number or 'best'; found 'worst'"),
    ('kind = "video"\nresize = { width = 1080, height = 1920, fit = "fill" }\nfps_max = "30"',
     "sq.fps_max: expected a number; found '30'"),
    (('kind = "video"\nresize = { width = 1080, height = 1920, fit = "fill" }\n'
      'ladder = [{ name = "hi", bitrate_kbps = "3000" }]'),
     "sq.ladder[0].bitrate_kbps: expected an integer; found '3000'"),
]


@pytest.mark.parametrize(("body", "message"), WRONG_TYPES,
                         ids=[m.split(":")[0] + "-" + m.rsplit(" ", 1)[-1] for _, m in WRONG_TYPES])
def test_wrong_type_is_refused_with_file_key_expected_and_found(tmp_path, body, message):
    path = write(tmp_path, "presets", "mine", f"[sq]\n{body}\n")
    assert error_of(tmp_path) == f"{path}: {message}"


def test_a_channel_rule_colour_says_expected_once(tmp_path):
    # the garbled form was "expected expected a colour like '#ffffff', found 'red'; found 'red'"
    path = write(tmp_path, "channels", "shop", """
name = "shop"
[[outputs]]
name = "big"
preset = "email-600"
[rules]
background = "red"
""")
    message = error_of(tmp_path)
    assert message == f"{path}: rules.background: expected a colour like '#ffffff'; found 'red'"
    assert message.count("expected") == 1 and message.count("found") == 1


def test_integers_fit_number_fields_and_lists_fit_list_fields(tmp_path):
    write(tmp_path, "presets", "mine", """
[sq]
trim = { threshold = 10 }
resize = { width = 2000, height = 2000, fit = "pad", fill_ratio = 1 }
format = "jpeg"
[clip]
kind = "video"
resize = { width = 1280, height = 720, fit = "fill" }
fps_max = 30
max_duration_s = 10
keyframe_s = 2
ladder = [{ name = "720p", width = 1280, height = 720, bitrate_kbps = 3000 }]
""")
    write(tmp_path, "channels", "shop", """
name = "shop"
[[outputs]]
name = "main"
preset = "sq"
when = { role = "product", position = [0, 1] }
[[outputs]]
name = "clip"
preset = "clip"
[rules]
formats = ["jpeg", "mp4"]
min_fill = 1
""")
    config = load_config(tmp_path)
    sq = config.presets["sq"]
    assert sq.trim.threshold == 10.0 and isinstance(sq.trim.threshold, float)
    assert sq.resize.fill_ratio == 1.0 and config.presets["clip"].fps_max == 30.0
    assert config.channels["shop"].outputs[0].when.position == [0, 1]
    assert config.channels["shop"].rules.formats == ["jpeg", "mp4"]


@pytest.mark.parametrize(("position", "message"), [
    ("1.5", ": expected an integer, a string or a list; found 1.5"),
    ("true", ": expected an integer, a string or a list; found True"),
    ('"x"', ": expected a position, a range like '1-8' or a list; found 'x'"),
    ('"3-1"', ": expected a range from low to high, like '1-8'; found '3-1'"),
    ('["1"]', "[0]: expected an integer; found '1'"),
])
def test_position_of_the_wrong_type(tmp_path, position, message):
    path = write(tmp_path, "channels", "shop", f"""
name = "shop"
[[outputs]]
name = "big"
preset = "email-600"
when = {{ position = {position} }}
""")
    assert error_of(tmp_path) == f"{path}: outputs[0].when.position{message}"


@pytest.mark.parametrize("pattern", ["{id}/{ext}.x", "{id}{ext}", "{id}.{ext}/x", "{id}.jpg",
                                     "{id}.{ext}.tmp"])
def test_naming_pattern_must_end_in_dot_ext(tmp_path, pattern):
    path = write(tmp_path, "channels", "shop", f"""
name = "shop"
[[outputs]]
name = "big"
preset = "email-600"
path = "{pattern}"
""")
    assert error_of(tmp_path) == (
        f"{path}: outputs[0].path: expected a naming pattern ending in '.{{ext}}'; "
        f"found {pattern!r}")


@pytest.mark.parametrize("pattern", ["{id}.{ext}", "{product}.PT{position:02}.{ext}",
                                     "{channel}/{id}/{output}.{ext}"])
def test_naming_patterns_ending_in_dot_ext_load(tmp_path, pattern):
    write(tmp_path, "channels", "shop", f"""
name = "shop"
[[outputs]]
name = "big"
preset = "email-600"
path = "{pattern}"
""")
    assert load_config(tmp_path).channels["shop"].outputs[0].path == pattern


def test_channel_value_of_the_wrong_type(tmp_path):
    path = write(tmp_path, "channels", "shop", """
name = "shop"
[[outputs]]
name = "big"
preset = "email-600"
[rules]
max_bytes = "60000"
min_fill = "0.9"
""")
    assert error_of(tmp_path) == (
        "2 problems in the configuration:\n"
        f"  {path}: rules.max_bytes: expected an integer; found '60000'\n"
        f"  {path}: rules.min_fill: expected a number; found '0.9'")
