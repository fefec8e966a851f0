"""Every configuration error reads `FILE: KEY.PATH: expected X; found Y`, once, and a
configuration's problems are all reported together in one ConfigError.

One row per validation branch: the file's kind, its TOML, and the exact line it must give
("FILE" stands for the file's path). Channel rows are loaded beside FIXTURE_PRESETS.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from helpers import write_config as write

from engine.errors import ConfigError, ConfigProblems
from engine.spec import load_config
from engine.spec.loader import ConfigFile, load_files

FIXTURE_PRESETS = """
[sq-pad]
resize = { width = 800, height = 800, fit = "pad", fill_ratio = 0.8 }
format = "png"
background = "#f0f0f0"

[wide-fill]
resize = { width = 3000, height = 1000, fit = "fill" }
format = "jpeg"
max_bytes = 90000

[clip]
kind = "video"
resize = { width = 1080, height = 1920, fit = "fill" }
fps_max = 30
max_duration_s = 60
maxrate_kbps = 8000

[ladder-clip]
kind = "video"
resize = { width = 1280, height = 720, fit = "fit" }
ladder = [{ name = "hi", width = 1280, height = 720, bitrate_kbps = 6000 },
          { name = "lo", width = 640, height = 360, bitrate_kbps = 1000 }]
"""

SQ = 'resize = { width = 100, height = 100, fit = "fill" }\n'
VID = 'kind = "video"\nresize = { width = 1080, height = 1920, fit = "fill" }\n'
RUNG_A = '{ name = "a", width = 640, height = 360, bitrate_kbps = 100 }'


def chan(preset: str, rest: str = "") -> str:
    return f'name = "shop"\n[[outputs]]\nname = "main"\npreset = "{preset}"\n{rest}'


def out(extra: str) -> str:  # an output of a builtin preset, with more keys
    return chan("email-600", extra)


# (id, kind, file text, the exact message with FILE for the file's path)
ROWS = [
    # --- reading and parsing a file
    ("toml-expected", "presets", "[a\nformat=",
     ("FILE: line 1, column 3: expected valid TOML (']' at the end of a table declaration); "
      "found the end of the line")),
    ("toml-expected-token", "presets", "[a]\nx = 1 b",
     ("FILE: line 2, column 7: expected valid TOML (newline or end of document after a "
      "statement); found 'b'")),
    ("toml-other", "presets", "[a]\nx = 1\nx = 2\n",
     "FILE: line 3, column 6: expected valid TOML; found 'x = 2' (cannot overwrite a value)"),
    ("toml-end", "presets", '[a]\nx = "abc',
     "FILE: line 2: expected valid TOML; found the end of the file (unterminated string)"),
    # --- the preset file's tables
    ("preset-not-table", "presets", "sq = 5",
     "FILE: sq: expected a table [sq] describing a preset; found 5"),
    ("preset-kind", "presets", '[sq]\nkind = "audio"\n' + SQ,
     "FILE: sq.kind: expected 'image' or 'video'; found 'audio'"),
    ("preset-kind-list", "presets", "[sq]\nkind = [1]\n" + SQ,
     "FILE: sq.kind: expected 'image' or 'video'; found [1]"),
    # --- keys: unknown, missing, of the wrong type or value (pydantic's own checks)
    ("unknown-key-close", "presets", f'[sq]\n{SQ}format = "jpeg"\nqualty = 80',
     ("FILE: sq.qualty: expected a known key; found unknown key 'qualty', "
      "did you mean 'quality'?")),
    ("unknown-key-nested", "presets", ('[sq]\nresize = { width = 100, fitt = "fit" }\n'
                                       'format = "jpeg"'),
     "FILE: sq.resize.fitt: expected a known key; found unknown key 'fitt', did you mean 'fit'?"),
    ("unknown-key-far", "presets", ('[sq]\nresize = { width = 100, colour = "red" }\n'
                                    'format = "jpeg"'),
     ("FILE: sq.resize.colour: expected a known key (one of fill_ratio, fit, gravity, height, "
      "width); found unknown key 'colour'")),
    ("unknown-key-channel", "channels", 'rulez = {}\n' + out(""),
     "FILE: rulez: expected a known key; found unknown key 'rulez', did you mean 'rules'?"),
    ("unknown-key-list-item", "channels", out('when = { rol = "product" }'),
     ("FILE: outputs[0].when.rol: expected a known key; found unknown key 'rol', "
      "did you mean 'role'?")),
    ("missing-literal", "presets", f"[sq]\n{SQ}",
     ("FILE: sq.format: expected one of 'jpeg', 'webp', 'avif' or 'png'; "
      "found nothing (the key is required)")),
    ("missing-table", "presets", '[sq]\nformat = "jpeg"',
     "FILE: sq.resize: expected a table; found nothing (the key is required)"),
    ("missing-list", "channels", 'name = "shop"',
     "FILE: outputs: expected a list; found nothing (the key is required)"),
    ("missing-in-list-item", "channels", 'name = "shop"\n[[outputs]]\nname = "main"',
     "FILE: outputs[0].preset: expected a string; found nothing (the key is required)"),
    ("missing-in-rung", "presets", f"[v]\n{VID}ladder = [{{ name = \"hi\" }}]",
     "FILE: v.ladder[0].bitrate_kbps: expected an integer; found nothing (the key is required)"),
    ("wrong-type", "presets", f'[sq]\n{SQ}format = "jpeg"\nquality = "92"',
     "FILE: sq.quality: expected an integer or 'auto'; found '92'"),
    ("bound", "presets", f'[sq]\n{SQ}format = "jpeg"\nquality = 101',
     "FILE: sq.quality: expected a number <= 100 or 'auto'; found 101"),
    ("literal", "presets", f'[sq]\n{SQ}format = "bmp"',
     "FILE: sq.format: expected one of 'jpeg', 'webp', 'avif' or 'png'; found 'bmp'"),
    ("union", "presets", f'[sq]\n{SQ}format = "jpeg"\nframe = "worst"',
     "FILE: sq.frame: expected a number or 'best'; found 'worst'"),
    ("pattern", "channels", 'name = "Shop"\n[[outputs]]\nname = "a"\npreset = "email-600"',
     "FILE: name: expected a name matching ^[a-z0-9][a-z0-9_-]*$; found 'Shop'"),
    ("too-short", "channels", 'name = "shop"\noutputs = []',
     "FILE: outputs: expected at least 1 item(s); found []"),
    ("colour", "presets", f'[sq]\n{SQ}format = "jpeg"\nbackground = "white"',
     "FILE: sq.background: expected a colour like '#ffffff'; found 'white'"),
    ("rule-colour", "channels", out('[rules]\nbackground = "red"'),
     "FILE: rules.background: expected a colour like '#ffffff'; found 'red'"),
    # --- resize
    ("resize-none", "presets", '[sq]\nresize = { fit = "fit" }\nformat = "jpeg"',
     "FILE: sq.resize: expected width, height or both; found neither"),
    ("resize-pad-one-side", "presets", ('[sq]\nresize = { width = 100, fit = "pad" }\n'
                                        'format = "jpeg"'),
     "FILE: sq.resize: expected width and height for fit = 'pad'; found width = 100 only"),
    ("resize-fill-one-side", "presets", ('[sq]\nresize = { height = 50, fit = "fill" }\n'
                                         'format = "jpeg"'),
     "FILE: sq.resize: expected width and height for fit = 'fill'; found height = 50 only"),
    ("resize-fill-ratio", "presets", ('[sq]\nresize = { width = 100, fill_ratio = 0.9 }\n'
                                      'format = "jpeg"'),
     ("FILE: sq.resize.fill_ratio: expected no fill_ratio unless fit = 'pad'; "
      "found 0.9 with fit = 'fit'")),
    ("resize-gravity", "presets", ('[sq]\nresize = { width = 100, gravity = "north" }\n'
                                   'format = "jpeg"'),
     ("FILE: sq.resize.gravity: expected 'centre' unless fit = 'fill'; "
      "found 'north' with fit = 'fit'")),
    # --- image presets
    ("png-max-bytes", "presets", f'[sq]\n{SQ}format = "png"\nmax_bytes = 5000',
     ("FILE: sq.max_bytes: expected a lossy format (jpeg, webp or avif) for a byte budget; "
      "found format = 'png'")),
    ("min-quality", "presets", (f'[sq]\n{SQ}format = "jpeg"\nmax_bytes = 5000\nquality = 40\n'
                                "min_quality = 50"),
     "FILE: sq.min_quality: expected at most quality = 40; found 50"),
    ("min-quality-default", "presets", (f'[sq]\n{SQ}format = "jpeg"\nmax_bytes = 5000\n'
                                        "min_quality = 90"),
     "FILE: sq.min_quality: expected at most quality = 85 (jpeg's default); found 90"),
    ("effort", "presets", f'[sq]\n{SQ}format = "webp"\neffort = 7',
     "FILE: sq.effort: expected 0..6 for format = 'webp'; found 7"),
    ("effort-jpeg", "presets", f'[sq]\n{SQ}format = "jpeg"\neffort = 3',
     "FILE: sq.effort: expected 0 for format = 'jpeg'; found 3"),
    # --- video presets
    ("codec", "presets", f'[v]\n{VID}codec = "vp9"',
     "FILE: v.codec: expected 'h264', 'hevc' or 'av1' for format = 'mp4'; found 'vp9'"),
    ("codec-animated", "presets", (f'[v]\n{VID}format = "gif"\ncodec = "h264"\nfps_max = 10\n'
                                   "max_duration_s = 5"),
     ("FILE: v.codec: expected no codec for format = 'gif' (an animated image has none); "
      "found 'h264'")),
    ("audio", "presets", f'[v]\n{VID}audio = "opus"',
     "FILE: v.audio: expected 'aac' or 'none' for format = 'mp4'; found 'opus'"),
    ("attention", "presets", ('[v]\nkind = "video"\nresize = { width = 100, height = 100, '
                              'fit = "fill", gravity = "attention" }'),
     ("FILE: v.resize.gravity: expected a fixed gravity (centre, north, ...) for a video; "
      "found 'attention'")),
    ("odd-size", "presets", ('[v]\nkind = "video"\nresize = { width = 1081, height = 1920, '
                             'fit = "fill" }'),
     "FILE: v.resize: expected an even width and height (4:2:0 video); found width = 1081"),
    ("odd-rung", "presets", (f"[v]\n{VID}ladder = [{{ name = \"hi\", width = 640, height = 361, "
                             "bitrate_kbps = 900 }]"),
     "FILE: v.ladder[0]: expected an even width and height (4:2:0 video); found height = 361"),
    ("start-with-audio", "presets", f"[v]\n{VID}start_s = 5",
     ("FILE: v.start_s: expected 0 unless audio = 'none' (a clip from inside a video has no "
      "audio); found 5 with audio = 'aac'")),
    ("crf-and-bitrate", "presets", f"[v]\n{VID}crf = 20\nbitrate_kbps = 3000",
     ("FILE: v: expected crf (constant quality) or bitrate_kbps (average), not both; "
      "found crf = 20 and bitrate_kbps = 3000")),
    ("bufsize", "presets", f"[v]\n{VID}bufsize_kbps = 3000",
     "FILE: v: expected maxrate_kbps with bufsize_kbps; found bufsize_kbps = 3000 only"),
    ("animated-needs", "presets", f'[v]\n{VID}format = "gif"\nfps_max = 10',
     ("FILE: v: expected fps_max and max_duration_s for an animated gif; "
      "found fps_max = 10 only")),
    ("animated-frames", "presets", (f'[v]\n{VID}format = "gif"\nfps_max = 10\n'
                                    "max_duration_s = 40"),
     ("FILE: v: expected at most 300 frames (fps_max x max_duration_s) in an animated gif; "
      "found 10 x 40 = 400")),
    ("animated-crf", "presets", (f'[v]\n{VID}format = "webp"\nfps_max = 10\nmax_duration_s = 4\n'
                                 "crf = 20"),
     "FILE: v.crf: expected no crf in an animated webp; found 20"),
    ("ladder-bitrate", "presets", f"[v]\n{VID}bitrate_kbps = 300\nladder = [{RUNG_A}]",
     ("FILE: v.bitrate_kbps: expected no bitrate_kbps beside a ladder (each rung sets its own); "
      "found 300")),
    ("ladder-names", "presets", f"[v]\n{VID}ladder = [{RUNG_A}, {RUNG_A}]",
     ("FILE: v.ladder[1].name: expected a name no other rung has; found 'a', "
      "which ladder[0] has too")),
    ("ladder-rung-size", "presets",
     f'[v]\n{VID}ladder = [{{ name = "a", width = 640, bitrate_kbps = 100 }}]',
     "FILE: v.ladder[0]: expected width and height for fit = 'fill'; found width = 640 only"),
    # --- outputs: when, path
    ("position-text", "channels", out('when = { position = "x" }'),
     ("FILE: outputs[0].when.position: expected a position, a range like '1-8' or a list; "
      "found 'x'")),
    ("position-empty-range", "channels", out('when = { position = "3-1" }'),
     ("FILE: outputs[0].when.position: expected a range from low to high, like '1-8'; "
      "found '3-1'")),
    ("path-syntax", "channels", out('path = "{id"'),
     ("FILE: outputs[0].path: expected a naming pattern like '{id}/{output}.{ext}'; "
      "found '{id' (expected '}' before end of string)")),
    ("path-field", "channels", out('path = "{secret}.{ext}"'),
     ("FILE: outputs[0].path: expected only the fields {channel}, {ext}, {id}, {output}, "
      "{position}, {product}, {role}; found {secret} in '{secret}.{ext}'")),
    ("path-conversion", "channels", out('path = "{id!r}.{ext}"'),
     ("FILE: outputs[0].path: expected fields without a conversion (like !r); "
      "found {id!r} in '{id!r}.{ext}'")),
    ("path-spec", "channels", out('path = "{id:02}.{ext}"'),
     ("FILE: outputs[0].path: expected a format spec on {position} only; "
      "found {id:02} in '{id:02}.{ext}'")),
    ("path-position-spec", "channels", out('path = "{position:x}.{ext}"'),
     ("FILE: outputs[0].path: expected a position format like {position:02}; "
      "found {position:x} in '{position:x}.{ext}'")),
    ("path-outside", "channels", out('path = "../{id}.{ext}"'),
     "FILE: outputs[0].path: expected a path inside the output folder; found '../{id}.{ext}'"),
    ("path-ext", "channels", out('path = "{id}.jpg"'),
     "FILE: outputs[0].path: expected a naming pattern ending in '.{ext}'; found '{id}.jpg'"),
    # --- channels
    ("output-names", "channels", out('[[outputs]]\nname = "main"\npreset = "email-1200"'),
     ("FILE: outputs[1].name: expected a name no other output has; found 'main', "
      "which outputs[0] has too")),
    ("channel-name", "channels", out("").replace('"shop"', '"shopp"', 1),
     "FILE: name: expected the file's name 'shop'; found 'shopp'"),
    ("preset-unknown-close", "channels", chan("sq-pa"),
     ("FILE: outputs[0].preset: expected the name of a preset; found 'sq-pa', "
      "did you mean 'sq-pad'?")),
    ("preset-unknown-far", "channels", chan("no-such-preset"),
     ("FILE: outputs[0].preset: expected the name of a preset; found 'no-such-preset', "
      "which no presets/*.toml defines")),
    # --- an output's preset against the channel's rules
    ("rule-formats", "channels", chan("sq-pad", '[rules]\nformats = ["jpeg", "webp"]'),
     ("FILE: outputs[0].preset: expected a preset in format 'jpeg' or 'webp' (per rules.formats); "
      "found 'sq-pad', which makes 'png'")),
    ("rule-formats-own", "channels", chan("sq-pad", 'rules = { formats = ["jpeg"] }'),
     ("FILE: outputs[0].preset: expected a preset in format 'jpeg' (per "
      "outputs[0].rules.formats); found 'sq-pad', which makes 'png'")),
    ("rule-min-long-side", "channels", chan("sq-pad", "[rules]\nmin_long_side = 1000"),
     ("FILE: outputs[0].preset: expected a preset with a long side of at least 1000 (per "
      "rules.min_long_side); found 'sq-pad', which makes 800")),
    ("rule-max-long-side", "channels", chan("wide-fill", "[rules]\nmax_long_side = 2000"),
     ("FILE: outputs[0].preset: expected a preset with a long side of at most 2000 (per "
      "rules.max_long_side); found 'wide-fill', which makes 3000")),
    ("rule-max-bytes", "channels", chan("wide-fill", "[rules]\nmax_bytes = 60000"),
     ("FILE: outputs[0].preset: expected a preset with max_bytes <= 60000 (per rules.max_bytes); "
      "found 'wide-fill', which has max_bytes = 90000")),
    ("rule-max-bytes-none", "channels", chan("sq-pad", "[rules]\nmax_bytes = 60000"),
     ("FILE: outputs[0].preset: expected a preset with max_bytes <= 60000 (per rules.max_bytes); "
      "found 'sq-pad', which has no max_bytes")),
    ("rule-background", "channels", chan("sq-pad", '[rules]\nbackground = "#FFFFFF"'),
     ("FILE: outputs[0].preset: expected a preset with background '#ffffff' (per "
      "rules.background); found 'sq-pad', which has '#f0f0f0'")),
    ("rule-aspect", "channels", chan("wide-fill", "[rules]\nmin_aspect = 0.5\nmax_aspect = 2"),
     ("FILE: outputs[0].preset: expected a preset with an aspect (width / height) from 0.5 to 2 "
      "(per rules.min_aspect, rules.max_aspect); found 'wide-fill', which makes 3000x1000 (3)")),
    ("rule-aspect-min", "channels", chan("sq-pad", "[rules]\nmin_aspect = 1.5"),
     ("FILE: outputs[0].preset: expected a preset with an aspect (width / height) of at least 1.5 "
      "(per rules.min_aspect); found 'sq-pad', which makes 800x800 (1)")),
    ("rule-min-fill", "channels", chan("sq-pad", "[rules]\nmin_fill = 0.85"),
     ("FILE: outputs[0].preset: expected a preset with fill_ratio >= 0.85 (per rules.min_fill); "
      "found 'sq-pad', which has fill_ratio = 0.8")),
    ("rule-min-fill-none", "channels", chan("wide-fill", "[rules]\nmin_fill = 0.85"),
     ("FILE: outputs[0].preset: expected a preset with fill_ratio >= 0.85 (per rules.min_fill); "
      "found 'wide-fill', which has no fill_ratio")),
    ("rule-codecs", "channels", chan("clip", '[rules]\ncodecs = ["vp9", "av1"]'),
     ("FILE: outputs[0].preset: expected a preset with codec 'vp9' or 'av1' (per rules.codecs); "
      "found 'clip', which makes 'h264'")),
    ("rule-max-fps", "channels", chan("clip", "[rules]\nmax_fps = 25"),
     ("FILE: outputs[0].preset: expected a preset with fps_max <= 25 (per rules.max_fps); "
      "found 'clip', which has fps_max = 30")),
    ("rule-max-duration", "channels", chan("clip", "[rules]\nmax_duration_s = 15"),
     ("FILE: outputs[0].preset: expected a preset with max_duration_s <= 15 (per "
      "rules.max_duration_s); found 'clip', which has max_duration_s = 60")),
    ("rule-max-duration-none", "channels", chan("ladder-clip", "[rules]\nmax_duration_s = 15"),
     ("FILE: outputs[0].preset: expected a preset with max_duration_s <= 15 (per "
      "rules.max_duration_s); found 'ladder-clip', which has no max_duration_s")),
    ("rule-max-bitrate", "channels", chan("clip", "[rules]\nmax_bitrate_kbps = 5000"),
     ("FILE: outputs[0].preset: expected a preset with maxrate_kbps (or bitrate_kbps) <= 5000 "
      "(per rules.max_bitrate_kbps); found 'clip', which has maxrate_kbps = 8000")),
    ("rule-max-bitrate-rung", "channels", chan("ladder-clip", "[rules]\nmax_bitrate_kbps = 5000"),
     ("FILE: outputs[0].preset: expected a preset with maxrate_kbps (or bitrate_kbps) <= 5000 "
      "(per rules.max_bitrate_kbps); found 'ladder-clip', whose rung 'hi' has "
      "bitrate_kbps = 6000")),
]




def error_of(root: Path | str | None) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_config(root)
    return err.value


@pytest.mark.parametrize(("kind", "text", "expected"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])
def test_each_branch_gives_one_exact_line(tmp_path, kind, text, expected):
    if kind == "channels":
        write(tmp_path, "presets", "fixture", FIXTURE_PRESETS)
    path = write(tmp_path, kind, "shop" if kind == "channels" else "mine", text)
    err = error_of(tmp_path)
    assert str(err) == expected.replace("FILE", str(path), 1)
    assert err.problems == [str(err)]
    line = str(err).removeprefix(f"{path}: ")
    assert line.count("expected ") == 1 or "(expected '}'" in line  # once, in the shape
    assert "; found " in line


def test_the_fixture_presets_load(tmp_path):
    write(tmp_path, "presets", "fixture", FIXTURE_PRESETS)
    assert {"sq-pad", "wide-fill", "clip", "ladder-clip"} <= set(load_config(tmp_path).presets)


def test_a_file_that_is_not_utf8_or_not_a_file(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "bin.toml").write_bytes(b"[a]\nx = '\xff'\n")
    (tmp_path / "presets" / "dir.toml").mkdir()
    err = error_of(tmp_path)
    assert err.problems == [
        f"{tmp_path}/presets/bin.toml: (file): expected UTF-8 text; found byte 0xff at offset 9",
        f"{tmp_path}/presets/dir.toml: (file): expected a file it can read; found Is a directory",
    ]


def test_config_dir_that_is_missing_or_a_file(tmp_path):
    assert str(error_of(tmp_path / "nope")) == (
        f"--config-dir: expected a folder of channels/ and presets/; "
        f"found {str(tmp_path / 'nope')!r}, which does not exist")
    (tmp_path / "file").write_text("")
    assert str(error_of(tmp_path / "file")) == (
        f"--config-dir: expected a folder of channels/ and presets/; "
        f"found {str(tmp_path / 'file')!r}, which is not a folder")


def test_unknown_channels_say_did_you_mean():
    config = load_config()
    known = ", ".join(sorted(config.channels))
    with pytest.raises(ConfigError) as err:
        config.select(["amzon", "web", "zzz"])
    assert err.value.problems == [
        (f"--channel: expected the name of a channel ({known}); found unknown channel 'amzon', "
         "did you mean 'amazon'?"),
        f"--channel: expected the name of a channel ({known}); found unknown channel 'zzz'",
    ]
    assert str(err.value).splitlines()[0] == "2 problems in the configuration:"
    assert [c.name for c in config.select(["web", "amazon", "web"])] == ["web", "amazon"]


def test_every_problem_of_every_file_at_once(tmp_path):
    presets = write(tmp_path, "presets", "mine", """
[tiny-100]
resize = { width = 100, fit = "pad" }
format = "png"
qualty = 3
[tiny-200]
resize = { width = 200, height = 200, fit = "fill" }
format = "png"
""")
    broken = write(tmp_path, "presets", "zz-broken", "[a\n")
    shop = write(tmp_path, "channels", "shop", """
name = "shop"
[[outputs]]
name = "a"
preset = "tiny-100"
[[outputs]]
name = "b"
preset = "tiny-200"
[rules]
formats = ["jpeg"]
""")
    other = write(tmp_path, "channels", "other", 'name = "shop2"\n')
    err = error_of(tmp_path)
    assert isinstance(err, ConfigProblems)
    assert err.problems == [
        (f"{presets}: tiny-100.resize: expected width and height for fit = 'pad'; "
         "found width = 100 only"),
        (f"{presets}: tiny-100.qualty: expected a known key; found unknown key 'qualty', "
         "did you mean 'quality'?"),
        (f"{broken}: line 1, column 3: expected valid TOML (']' at the end of a table "
         "declaration); found the end of the line"),
        f"{other}: outputs: expected a list; found nothing (the key is required)",
        f"{other}: name: expected the file's name 'other'; found 'shop2'",
        # tiny-100 is refused above: not reported again as unknown
        (f"{shop}: outputs[1].preset: expected a preset in format 'jpeg' (per rules.formats); "
         "found 'tiny-200', which makes 'png'"),
    ]
    assert str(err) == "6 problems in the configuration:\n" + "\n".join(
        "  " + line for line in err.problems)


def test_one_output_breaking_several_rules_gives_a_line_each(tmp_path):
    write(tmp_path, "presets", "fixture", FIXTURE_PRESETS)
    path = write(tmp_path, "channels", "shop", chan("sq-pad", """
[rules]
formats = ["jpeg"]
min_long_side = 1000
min_fill = 0.9
"""))
    err = error_of(tmp_path)
    assert [p.removeprefix(f"{path}: outputs[0].preset: expected a preset ").split(" (per")[0]
            for p in err.problems] == [
        "in format 'jpeg'", "with a long side of at least 1000", "with fill_ratio >= 0.9"]


def test_a_preset_breaking_several_checks_gives_a_line_each(tmp_path):
    path = write(tmp_path, "presets", "mine", f"""
[v]
{VID}format = "gif"
codec = "h264"
crf = 20
""")
    assert error_of(tmp_path).problems == [
        (f"{path}: v.codec: expected no codec for format = 'gif' (an animated image has none); "
         "found 'h264'"),
        f"{path}: v: expected fps_max and max_duration_s for an animated gif; found neither",
        f"{path}: v.crf: expected no crf in an animated gif; found 20",
    ]


def test_a_broken_override_is_not_replaced_by_the_builtin_one(tmp_path):
    # presets/email.toml of the config dir redefines email-600 wrongly: the builtin email
    # channel must not be checked against the builtin email-600 instead, nor told it is unknown
    path = write(tmp_path, "presets", "email", '[email-600]\nresize = { width = 0 }\n'
                 'format = "jpeg"\n')
    assert error_of(tmp_path).problems == [
        f"{path}: email-600.resize.width: expected a number >= 1; found 0"]


def test_problems_survive_pickling_and_stored_configs_report_the_same_way():
    err = ConfigProblems(["a: b: expected c; found d", "e: f: expected g; found h"])
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, ConfigError) and again.problems == err.problems
    assert str(again) == str(err)
    files = [ConfigFile("presets", "x.toml", "[x]\nformat = 'jpeg'\n", "OUT/_config (x.toml)")]
    with pytest.raises(ConfigError) as caught:
        load_files(files)
    assert str(caught.value) == ("OUT/_config (x.toml): x.resize: expected a table; "
                                 "found nothing (the key is required)")


def test_the_cli_prints_each_problem_on_its_own_line(tmp_path):
    from click.testing import CliRunner

    from engine.cli import main

    write(tmp_path, "presets", "mine", '[sq]\nresize = { width = 100, fit = "pad" }\n'
          'format = "jpeg"\nqualty = 3\n')
    result = CliRunner().invoke(main, ["channels", "--config-dir", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0] == "error: 2 problems in the configuration:"
    assert lines[1].startswith("  ") and lines[1].endswith("found width = 100 only")
    assert lines[2].startswith("  ") and lines[2].endswith("did you mean 'quality'?")
    assert "Traceback" not in result.output


def test_an_unreadable_presets_file_does_not_make_every_preset_unknown(tmp_path):
    # its presets' names are not known: a channel naming one is not told it does not exist
    broken = write(tmp_path, "presets", "mine", '[sq]\nformat = "jpeg"\nx = \n')
    write(tmp_path, "channels", "shop", chan("sq"))
    assert error_of(tmp_path).problems == [
        f"{broken}: line 3, column 5: expected valid TOML; found 'x =' (invalid value)"]
