"""Feeds and exports built from a real render: valid URLs, every product listed or reported."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import problem_images as P
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from benchmarks.bytes import fixed_config
from engine import api
from engine.cli import main
from engine.publish.feeds import MAX_URL, URL_CHARS, file_url, url_problem

BASE = "https://cdn.example.com/shop"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three products: one with a main and two more images (one named with a space and an
    accent), one with a main only, and one with no main image; plus an editorial master."""
    root = tmp_path_factory.mktemp("shop")
    masters = root / "masters"
    masters.mkdir()
    for name in ("a0", "a1", "a2", "b0", "c1", "hero"):
        P.scene(300, 200).jpegsave(str(masters / f"{name}.jpg"))
    (root / "list.csv").write_text(
        "id,path,product,position,role\n"
        "shoe/front,masters/a0.jpg,SHOE-1,0,product\n"
        "shoe/side,masters/a1.jpg,SHOE-1,1,product\n"
        "shoe/back,masters/a2.jpg,SHOE-1,2,product\n"
        "bag,masters/b0.jpg,BAG-2,0,product\n"
        "belt/side,masters/c1.jpg,BELT-3,1,product\n"
        "campaign,masters/hero.jpg,,,editorial\n"
    )
    out = root / "out"
    # at fixed qualities: the feeds read paths and rows, not how a quality was found
    fixed = fixed_config(root / "config")
    assert api.render(root / "list.csv", out, channels=["web", "amazon"],
                      config_dir=fixed).exit_code == 0
    return out


def read_tsv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def test_google_feed_lists_every_product_with_valid_urls(shop):
    result = CliRunner().invoke(main, ["feed", "google", str(shop), "--base-url", BASE + "/"])
    assert result.exit_code == 1  # BELT-3 has no main image: reported
    assert "BELT-3: no main image" in result.output
    rows = {r["id"]: r for r in read_tsv(result.stdout)}
    assert set(rows) == {"SHOE-1", "BAG-2"}
    shoe = rows["SHOE-1"]
    assert shoe["image_link"] == f"{BASE}/web/shoe/front/zoom-jpeg.jpg"
    assert shoe["additional_image_link"].split(",") == [
        f"{BASE}/web/shoe/side/zoom-jpeg.jpg", f"{BASE}/web/shoe/back/zoom-jpeg.jpg"]
    assert rows["BAG-2"]["additional_image_link"] == ""
    for row in rows.values():
        for url in [row["image_link"], *filter(None, row["additional_image_link"].split(","))]:
            assert url_problem(url, "jpeg") is None
            assert (shop / unquote(urlsplit(url).path).removeprefix("/shop/")).is_file()


def test_meta_feed_and_chosen_output(shop, tmp_path):
    target = tmp_path / "meta.csv"
    result = CliRunner().invoke(main, ["feed", "meta", str(shop), "--base-url", BASE,
                                       "--output", "gallery-1280-jpeg", "-o", str(target)])
    assert result.exit_code == 1 and "2 products" in result.output
    rows = list(csv.DictReader(target.open()))
    assert [r["id"] for r in rows] == ["BAG-2", "SHOE-1"]
    assert all(r["image_link"].endswith("/gallery-1280-jpeg.jpg") for r in rows)


def test_urls_are_percent_encoded_and_checked():
    url = file_url(BASE, "web/Schuh rot/größe 42.jpg")
    assert url == f"{BASE}/web/Schuh%20rot/gr%C3%B6%C3%9Fe%2042.jpg"
    assert URL_CHARS.match(url) and url_problem(url, "jpeg") is None
    assert "extension" in url_problem(url, "webp")
    assert "longer than" in url_problem(BASE + "/" + "a" * MAX_URL + ".jpg", "jpeg")
    assert "RFC 3986" in url_problem(BASE + "/a b.jpg", "jpeg")
    bad = CliRunner().invoke(main, ["feed", "google", "/", "--base-url", "ftp://x"])
    assert bad.exit_code == 2


def test_amazon_export_as_zip_and_folder(shop, tmp_path):
    result = CliRunner().invoke(main, ["feed", "amazon", str(shop), "-o",
                                       str(tmp_path / "amazon.zip")])
    assert result.exit_code == 1, result.output  # BELT-3 has no MAIN image: reported
    assert "BELT-3: no MAIN image" in result.output
    with zipfile.ZipFile(tmp_path / "amazon.zip") as archive:
        names = sorted(archive.namelist())
        listing = list(csv.DictReader(io.StringIO(archive.read("listing.csv").decode())))
    assert names == ["BAG-2.MAIN.jpg", "BELT-3.PT01.jpg", "SHOE-1.MAIN.jpg", "SHOE-1.PT01.jpg",
                     "SHOE-1.PT02.jpg", "listing.csv"]
    assert {(r["sku"], r["slot"]) for r in listing} >= {("SHOE-1", "PT02"), ("BAG-2", "MAIN")}
    folder = tmp_path / "amazon"
    assert [p for p in api.amazon_export(shop, folder) if "BELT-3" not in p] == []
    assert (folder / "SHOE-1.MAIN.jpg").read_bytes() == (shop / "amazon/SHOE-1.MAIN.jpg"
                                                         ).read_bytes()


def test_manifest_exports_as_csv_and_json(shop):
    rows = json.loads(CliRunner().invoke(main, ["feed", "manifest", str(shop), "--format",
                                                "json"]).stdout)
    table = list(csv.DictReader(io.StringIO(CliRunner().invoke(
        main, ["feed", "manifest", str(shop)]).stdout)))
    assert len(rows) == len(table) > 0
    assert {r["sha256"] for r in rows} == {r["sha256"] for r in table}
    assert "recipe_hash" in table[0] and "render_ms" in rows[0]


def test_a_feed_makes_python_rows_only_of_the_output_it_lists(shop, monkeypatch):
    """A million products' feed: one pass over a few columns finds the products and the
    output; only that output's rows become Python rows."""
    from engine import manifest

    made = []
    real = manifest.from_table
    monkeypatch.setattr(manifest, "from_table", lambda t: made.append(t.num_rows) or real(t))
    _, feed = api.feed(shop, "google", BASE)
    rows = pq.read_table(shop / "manifest.parquet").to_pylist()
    web = [r for r in rows if r["channel"] == "web" and r["status"] in ("ok", "skipped", "kept")
           and (r["role"] or "product") == "product"]
    listed = [r for r in web if r["output"] == feed.output]
    assert made == [len(listed)] and 0 < len(listed) < len(web)
    assert {i.product for i in feed.items} | {p.split()[1].rstrip(":,") for p in feed.problems
                                              if p.startswith("product ")} == {
        r["product"] for r in web}


def test_the_amazon_package_and_the_gallery_read_only_the_columns_they_use(shop, tmp_path):
    """api.amazon_export and api.gallery make Rows of a few columns (a full Row is ~4 KB): what
    they write is what every column gives."""
    from engine.manifest import read_rows
    from engine.publish.feeds import amazon_package
    from engine.publish.gallery import gallery
    from engine.store import Store

    full = read_rows(Store(shop))
    assert api.amazon_export(shop, tmp_path / "a") == amazon_package(full, shop, tmp_path / "b")
    made = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    assert made == {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    assert "listing.csv" in made and len(made) > 2
    doc = json.loads(api.gallery(shop, BASE))
    assert doc["products"] and doc == json.loads(json.dumps(gallery(full, shop, BASE)))


def test_a_failed_manifest_export_leaves_the_file_it_would_replace(shop, tmp_path):
    target = tmp_path / "manifest.csv"
    target.write_text("yesterday's export\n")
    empty = tmp_path / "not-out"
    empty.mkdir()
    result = CliRunner().invoke(main, ["feed", "manifest", str(empty), "-o", str(target)])
    assert result.exit_code == 2 and "not a fanout output folder" in result.output
    assert target.read_text() == "yesterday's export\n"
    assert CliRunner().invoke(main, ["feed", "manifest", str(shop), "-o", str(target)]
                              ).exit_code == 0
    assert target.read_text().startswith('"run_id",') and [p.name for p in tmp_path.iterdir()
                                                          if p.name.startswith(".")] == []


def test_manifest_csv_flattens_lists_and_maps_a_batch_at_a_time():
    from engine.api import _flat
    from engine.manifest import to_table
    from engine.rows import Row

    base = {"run_id": "r", "master_id": "m", "master_path": "p", "status": "ok"}
    rows = [Row(**base, tags=["a", "b"], breakpoints=[320, 640], extra={"z": "1", "a": "é"}),
            Row(**base, tags=[], breakpoints=[], extra={}), Row(**base)]
    flat = _flat(to_table(rows))
    assert flat.column("tags").to_pylist() == ["a|b", None, None]
    assert flat.column("breakpoints").to_pylist() == ["320|640", None, None]
    assert flat.column("extra").to_pylist() == ['{"a": "é", "z": "1"}', None, None]


def manifest_rows(out: Path) -> list:
    from engine.manifest import read_rows
    from engine.store import Store

    return read_rows(Store(out))


def test_two_images_at_one_position_are_reported(shop):
    from engine.publish.feeds import product_feed

    rows = manifest_rows(shop)
    twin = [r.replace(master_id="bag-copy", path=r.path.replace("bag/", "bag-copy/"))
            for r in rows if r.master_id == "bag"]
    feed = product_feed(rows + twin, "web", BASE, "google")
    assert any("BAG-2: several images at position 0" in p and "bag-copy" in p
               for p in feed.problems)
    assert [i.product for i in feed.items] == ["BAG-2", "SHOE-1"]


def test_amazon_package_refuses_two_masters_under_one_file_name(shop, tmp_path):
    from engine.errors import ConfigError
    from engine.publish.feeds import amazon_package

    rows = manifest_rows(shop)
    bag = [r for r in rows if r.channel == "amazon" and r.master_id == "bag"]
    assert [r.path for r in bag] == ["amazon/BAG-2.MAIN.jpg"]
    for twin_path in ("amazon/other/BAG-2.MAIN.jpg", "amazon/bag-2.MAIN.jpg"):
        twin = [r.replace(master_id="bag-copy", path=twin_path) for r in bag]
        for target in (tmp_path / "a.zip", tmp_path / "folder"):
            with pytest.raises(ConfigError) as err:
                amazon_package(rows + twin, shop, target)
            message = str(err.value)
            assert "'BAG-2'" in message and "'bag'" in message and "'bag-copy'" in message
            assert not target.exists()  # refused before anything is written
    assert "'bag-2'" in message  # the SKUs that differ only in case are both named


def test_kept_rows_are_published_in_feeds(shop, tmp_path):
    from engine.publish.feeds import amazon_package, product_feed

    rows = [r.replace(status="kept", error="bag.jpg: truncated", stale_since="R1")
            if r.master_id == "bag" else r for r in manifest_rows(shop)]
    feed = product_feed(rows, "web", BASE, "google")
    assert "BAG-2" in [i.product for i in feed.items]
    assert [p for p in amazon_package(rows, shop, tmp_path / "amazon") if "BELT" not in p] == []
    assert (tmp_path / "amazon" / "BAG-2.MAIN.jpg").is_file()


def test_google_refuses_images_under_its_minimum_size(shop):
    from engine.publish.feeds import product_feed

    rows = manifest_rows(shop)
    small = [r.replace(width=200, height=200) if r.master_id == "bag" else r for r in rows]
    assert not [p for p in product_feed(small, "web", BASE, "google").problems if "BAG" in p]
    feed = product_feed(small, "web", BASE, "google", apparel=True)
    assert any("BAG-2" in p and "200x200" in p and "250x250 for apparel" in p
               for p in feed.problems)
    assert "BAG-2" not in [i.product for i in feed.items]
    tagged = [r.replace(extra={"apparel": "yes"}) if r.master_id == "bag" else r for r in small]
    assert any("250x250" in p for p in product_feed(tagged, "web", BASE, "google").problems)
    tiny = [r.replace(width=90) if r.master_id == "bag" else r for r in rows]
    assert any("100x100 for non-apparel" in p
               for p in product_feed(tiny, "web", BASE, "google").problems)


def test_meta_takes_one_video_per_product_from_the_chosen_output(shop):
    from engine.publish.feeds import meta_csv, product_feed

    rows = manifest_rows(shop)
    base = next(r for r in rows if r.master_id == "bag")
    videos = [base.replace(master_id="bag/spin", master_kind="video", channel=ch, output=o,
                           path=f"{ch}/bag/spin/{o}.mp4", format="mp4", position=9)
              for ch, o in (("amazon", "video"), ("instagram", "feed-video"),
                            ("instagram", "reel"), ("mobile", "video-720p"))]
    feed = product_feed(rows + videos, "web", BASE, "meta")
    bag = next(i for i in feed.items if i.product == "BAG-2")
    assert bag.videos == [f"{BASE}/instagram/bag/spin/feed-video.mp4"]  # the default
    feed = product_feed(rows + videos, "web", BASE, "meta", video_channel="mobile")
    assert next(i for i in feed.items if i.product == "BAG-2").videos == [
        f"{BASE}/mobile/bag/spin/video-720p.mp4"]
    header = meta_csv(feed).splitlines()[0]
    assert header.endswith("video[0].url") and "video[1]" not in header
    no_instagram = [v for v in videos if v.channel != "instagram"]
    feed = product_feed(rows + no_instagram, "web", BASE, "meta")
    assert next(i for i in feed.items if i.product == "BAG-2").videos == [
        f"{BASE}/amazon/bag/spin/video.mp4"]  # else the first MP4
