from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import write_config
from problem_images import scene

from engine import api
from engine.catalog import load_catalog
from engine.errors import ConfigError
from engine.formats import sniff


def jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scene(120, 80).jpegsave(str(path))
    return path


def test_folder_ids_are_relative_paths_without_extension(tmp_path):
    jpeg(tmp_path / "shoes" / "red.jpg")
    jpeg(tmp_path / "bag.jpg")
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    masters = {m.id: m for m in load_catalog(tmp_path)}
    assert set(masters) == {"shoes/red", "bag"}
    assert masters["shoes/red"].kind == "image" and masters["bag"].product == "bag"


def test_duplicate_ids_fail_both_naming_both_files(tmp_path):
    jpeg(tmp_path / "shoe.jpg")
    scene(50, 50).pngsave(str(tmp_path / "shoe.png"))
    jpeg(tmp_path / "ok.jpg")
    masters = {Path(m.path).name: m for m in load_catalog(tmp_path)}
    assert masters["ok.jpg"].error is None
    assert "shoe.png" in masters["shoe.jpg"].error and "shoe.jpg" in masters["shoe.png"].error


def test_listing_csv_resolves_paths_and_validates_rows(tmp_path):
    jpeg(tmp_path / "m" / "a.jpg")
    (tmp_path / "list.csv").write_text(
        "id,path,product,position,role\n"
        "a,m/a.jpg,SKU1,2,product\n"
        "../evil,m/a.jpg,SKU1,,product\n"
        "b,m/a.jpg,,x,product\n"
        "c,m/a.jpg,,,lifestyle\n"
    )
    masters = {m.id: m for m in load_catalog(tmp_path / "list.csv")}
    a = masters["a"]
    assert (a.product, a.position, a.role, a.error) == ("SKU1", 2, "product", None)
    assert a.path == str(tmp_path / "m" / "a.jpg")
    assert "invalid id" in masters["../evil"].error
    assert "invalid position" in masters["b"].error
    assert "invalid role" in masters["c"].error


def test_listing_parquet_and_missing_columns(tmp_path):
    jpeg(tmp_path / "a.jpg")
    pq.write_table(pa.table({"id": ["a"], "path": ["a.jpg"], "role": ["editorial"]}),
                   tmp_path / "list.parquet")
    (master,) = load_catalog(tmp_path / "list.parquet")
    assert master.role == "editorial" and master.position == 0
    (tmp_path / "bad.csv").write_text("name,file\na,a.jpg\n")
    with pytest.raises(ConfigError, match="missing id, path"):
        load_catalog(tmp_path / "bad.csv")
    with pytest.raises(ConfigError, match="catalog not found"):
        load_catalog(tmp_path / "nope.csv")


def test_kind_comes_from_content_not_extension():
    assert sniff(b"\xff\xd8\xff\xe0" + b"\0" * 20) == "image"
    assert sniff(b"\x00\x00\x00\x20ftypisom" + b"\0" * 20) == "video"
    assert sniff(b"\x00\x00\x00\x1cftypavif" + b"\0" * 20) == "image"
    assert sniff(b"\x1a\x45\xdf\xa3" + b"\0" * 20) == "video"
    assert sniff(b"hello") is None


def catalog(tmp_path: Path, rows: list[str]) -> Path:
    jpeg(tmp_path / "a.jpg")
    listing = tmp_path / "list.csv"
    listing.write_text("id,path,product,position,role\n" + "\n".join(rows) + "\n")
    return listing


def test_outputs_select_masters_by_role_and_position(tmp_path):
    listing = catalog(tmp_path, ["main,a.jpg,SKU,0,product", "alt,a.jpg,SKU,3,product",
                                 "far,a.jpg,SKU,12,product", "hero,a.jpg,,,editorial"])
    plan = {mp.master.id: mp for mp in api.plan(listing).masters}
    amazon = {m: [d.path for d in mp.derivatives if d.channel == "amazon"]
              for m, mp in plan.items()}
    assert amazon == {"main": ["amazon/SKU.MAIN.jpg"], "alt": ["amazon/SKU.PT03.jpg"],
                      "far": [], "hero": []}
    web_outputs = {m: {d.output for d in mp.derivatives if d.channel == "web"}
                   for m, mp in plan.items()}
    assert "hero-webp" in web_outputs["hero"] and "zoom-webp" not in web_outputs["hero"]
    assert "zoom-webp" in web_outputs["main"] and "hero-webp" not in web_outputs["main"]
    assert {d.path for d in plan["hero"].derivatives if d.output == "hero-jpeg"} == {
        "web/hero/hero-jpeg.jpg"}


def test_identical_recipes_across_channels_are_one_render(tmp_path):
    (tmp_path / "cfg" / "channels").mkdir(parents=True)
    (tmp_path / "cfg" / "presets").mkdir()
    (tmp_path / "cfg" / "presets" / "dup.toml").write_text("""
[newsletter-600]
description = "same recipe as email-600 under another name"
resize = { width = 600, fit = "fit" }
format = "jpeg"
progressive = true
quality = "auto"
match_quality = 80
min_quality = 35
max_bytes = 60000
""")
    (tmp_path / "cfg" / "channels" / "newsletter.toml").write_text("""
name = "newsletter"
[[outputs]]
name = "body"
preset = "newsletter-600"
""")
    listing = catalog(tmp_path, ["a,a.jpg,,,product"])
    (mp,) = api.plan(listing, ["email", "newsletter"], tmp_path / "cfg").masters
    assert len(mp.derivatives) == 3 and len(mp.recipes()) == 2


def test_two_masters_claiming_one_file_fail_that_output(tmp_path):
    listing = catalog(tmp_path, ["a1,a.jpg,SKU,0,product", "a2,a.jpg,SKU,0,product"])
    plan = api.plan(listing, ["amazon"])
    errors = [d.error for mp in plan.masters for d in mp.derivatives]
    assert len(errors) == 2 and all("a1 (main)" in e and "a2 (main)" in e for e in errors)


def test_tags_route_an_asset_to_the_outputs_that_ask_for_them(tmp_path):
    for name in ("lookbook", "campaign", "plain"):
        scene(400, 300).jpegsave(str(tmp_path / f"{name}.jpg"))
    (tmp_path / "catalog.csv").write_text(
        "id,path,role,tags\n"
        "lookbook,lookbook.jpg,editorial,summer|homepage\n"
        "campaign,campaign.jpg,editorial,summer|internal\n"
        "plain,plain.jpg,editorial,\n")
    cfg = tmp_path / "cfg"
    write_config(cfg, "presets", "tiny", '[tiny-64]\nresize = { width = 64 }\nformat = "png"\n')
    write_config(cfg, "channels", "home", 'name = "home"\n[[outputs]]\nname = "hero"\n'
                 'preset = "tiny-64"\nwhen = { tags = ["homepage", "landing"] }\n')
    write_config(cfg, "channels", "public", 'name = "public"\n[[outputs]]\nname = "card"\n'
                 'preset = "tiny-64"\nwhen = { role = "editorial", not_tags = ["internal"] }\n')
    the_plan = api.plan(tmp_path / "catalog.csv", ["home", "public"], cfg)
    routed = {(mp.master.id, d.channel) for mp in the_plan.masters for d in mp.derivatives}
    assert routed == {("lookbook", "home"), ("lookbook", "public"), ("plain", "public")}
    write_config(cfg, "channels", "bad", 'name = "bad"\n[[outputs]]\nname = "x"\n'
                 'preset = "tiny-64"\nwhen = { tags = [] }\n')
    with pytest.raises(ConfigError, match=r"outputs\[0\]\.when\.tags"):
        api.plan(tmp_path / "catalog.csv", ["home"], cfg)
