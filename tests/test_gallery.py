"""The gallery export and the storefront page: srcset sets that point at real files, products
and images in order, editorial apart; and the page's behaviour in a real chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import problem_images as P
import pytest
from click.testing import CliRunner

from benchmarks.bytes import fixed_config
from engine import api
from engine.cli import main

BASE = "https://cdn.example.com/shop"
# Eight products (1400 wide masters: the ladder stops at the master's width), several positions
# listed out of order, alt text with a comma and quotes, two editorial banners.
PRODUCTS = [f"P{n}" for n in range(8)]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gallery")
    masters = root / "masters"
    masters.mkdir()
    lines = ["id,path,product,position,role,alt,title,tags,colourway"]
    for n, product in enumerate(PRODUCTS):
        positions = (2, 0, 1) if n in (0, 5) else (0,)
        for pos in positions:
            name = f"p{n}-{pos}"
            size = (1400, 1050) if pos else (1400, 1400)
            P.scene(*size).jpegsave(str(masters / f"{name}.jpg"))
            lines.append(f'{name},masters/{name}.jpg,{product},{pos},product,'
                         f'"View {pos}, ""{product}""",Thing {n},new|sale,red')
    for name in ("summer", "winter"):
        P.scene(2000, 1000).jpegsave(str(masters / f"{name}.jpg"))
        lines.append(f"{name},masters/{name}.jpg,,,editorial,{name} campaign,,,")
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    out = root / "out"
    # at fixed qualities: the gallery reads paths, sizes and order, not how a quality was found
    assert api.render(root / "list.csv", out, channels=["web"],
                      config_dir=fixed_config(root / "config")).exit_code == 0
    api.storefront(out)
    return out


def gallery_doc(out: Path) -> dict:
    result = CliRunner().invoke(main, ["feed", "gallery", str(out), "--base-url", BASE])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def local(out: Path, url: str) -> Path:
    return out / unquote(urlsplit(url).path).removeprefix("/shop/")


def srcset(text: str) -> list[tuple[str, int]]:
    return [(u, int(w[:-1])) for u, w in (part.strip().split(" ") for part in text.split(","))]


@pytest.mark.slow  # the shop: ten products through the web channel (~18 s)
def test_products_and_images_in_order_editorial_apart(shop):
    doc = gallery_doc(shop)
    assert [p["id"] for p in doc["products"]] == PRODUCTS  # catalog order
    for product in doc["products"]:
        positions = [i["position"] for i in product["images"]]
        assert positions == sorted(positions) and positions[0] == 0
    assert [i["master_id"] for i in doc["products"][0]["images"]] == ["p0-0", "p0-1", "p0-2"]
    assert doc["products"][0]["images"][0]["alt"] == 'View 0, "P0"'
    assert [e["master_id"] for e in doc["editorial"]] == ["summer", "winter"]
    assert {s["name"] for s in doc["editorial"][0]["sets"]} == {"hero", "share"}
    ids = {i["master_id"] for p in doc["products"] for i in p["images"]}
    assert not ids & {"summer", "winter"}


@pytest.mark.slow  # the shop fixture (~18 s)
def test_every_srcset_url_is_a_rendered_file_of_its_width(shop):
    import pyvips

    for product in gallery_doc(shop)["products"]:
        for image in product["images"]:
            assert [s["type"] for s in image["sources"]] == ["image/avif", "image/webp"]
            sets = [s["srcset"] for s in image["sources"]] + [image["srcset"]]
            for text in sets:
                pairs = srcset(text)
                assert [w for _, w in pairs] == sorted({w for _, w in pairs})
                assert pairs[-1][1] == image["width"] == 1400  # never upscaled
                for url, width in pairs:
                    file = pyvips.Image.new_from_file(str(local(shop, url)))
                    assert file.width == width
                    assert abs(file.height / file.width - image["height"] / image["width"]) < 0.01
            assert local(shop, image["src"]).suffix == ".jpg"
            assert image["placeholder"].startswith("data:image/")
            assert len(image["placeholder"]) < 1024
            assert re.fullmatch(r"#[0-9a-f]{6}", image["color"])


@pytest.mark.slow  # the shop fixture (~18 s)
def test_html_form_and_the_manifest_carry_the_catalog_data(shop):
    html = api.gallery(shop, BASE, "html")
    assert html.count("<picture") == 8 + 2 * 2 + 2 * 2  # products' images, editorial sets
    assert html.count('fetchpriority="high"') == 1
    first = html[html.index("<picture"):html.index("</picture>")]
    assert 'loading="lazy"' not in first and 'decoding="async"' in first
    rows = json.loads(api.export_manifest(shop, "json"))
    p0 = next(r for r in rows if r["master_id"] == "p0-0")
    assert p0["title"] == "Thing 0" and p0["tags"] == ["new", "sale"]
    assert p0["extra"] == {"colourway": "red"}


@pytest.mark.slow  # the demo (~50 s)
def test_the_demos_gallery_lists_its_video_with_codecs(demo_out):
    _, folder = demo_out
    out = folder / "out"
    assert (out / "storefront.html").is_file()
    doc = json.loads(api.gallery(out, BASE))
    sneaker = next(p for p in doc["products"] if p["id"] == "SNEAKER-RED")
    (video,) = sneaker["videos"]
    hls, source = video["sources"][:2]  # the mobile ladder's HLS master playlist first
    assert hls["type"] == "application/vnd.apple.mpegurl" and local(out, hls["src"]).is_file()
    assert re.fullmatch(r'video/mp4; codecs="avc1\.[0-9a-f]{6}, mp4a\.40\.2"', source["type"])
    assert local(out, source["src"]).is_file() and local(out, video["poster"]).is_file()


# -- in a real browser ---------------------------------------------------------------------

CLS = """new Promise(done => { let cls = 0;
  new PerformanceObserver(list => { for (const e of list.getEntries())
    if (!e.hadRecentInput) cls += e.value; }).observe({type: 'layout-shift', buffered: true});
  setTimeout(() => done(cls), 300); })"""
IMAGES = """Array.from(document.querySelectorAll('section.product picture img')).map(i => {
  const r = i.getBoundingClientRect();
  return {src: i.currentSrc, width: r.width, top: r.top + scrollY, complete: i.complete,
          srcset: i.parentElement.querySelector('source').srcset,
          position: +i.parentElement.dataset.position,
          product: i.closest('section').id}; })"""
# Chrome fetches lazy images this far below the viewport (1250 px on a fast connection, which a
# file:// page is; web.dev/articles/browser-level-image-lazy-loading#distance-from-viewport).
LAZY_MARGIN = 1250


@pytest.mark.slow
@pytest.mark.parametrize("viewport", [(1280, 800), (390, 844)])
def test_storefront_in_chromium(browser, shop, viewport):
    width, height = viewport
    context = browser.new_context(viewport={"width": width, "height": height},
                                  device_scale_factor=2)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((shop / "storefront.html").as_uri())
    page.wait_for_load_state("networkidle")
    out_uri = shop.as_uri() + "/"
    assert all(u.startswith((out_uri, "data:")) for u in requests), requests
    assert page.evaluate(CLS) == 0
    images = page.evaluate(IMAGES)
    far = [i for i in images if i["top"] > height + LAZY_MARGIN]
    assert far, "the page is long enough to test lazy loading"
    def absolute(url: str) -> str:  # the page's URLs are relative to OUT
        return unquote(out_uri + url.removeprefix("./"))

    fetched = {unquote(u) for u in requests}
    assert absolute(srcset(images[0]["srcset"])[0][0]).startswith(unquote(out_uri))
    assert unquote(images[0]["src"]) in fetched  # the eager main image, by the same naming
    for image in far:  # below the fold: nothing of it fetched before scrolling
        names = {absolute(u) for u, _ in srcset(image["srcset"])}
        assert not names & fetched, image
    for y in range(0, page.evaluate("document.body.scrollHeight"), height // 2):
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(50)
    page.wait_for_load_state("networkidle")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    assert page.evaluate(CLS) == 0
    images = page.evaluate(IMAGES)
    for image in images:
        assert image["src"].endswith(".avif"), image  # the AVIF source is chosen
        widths = sorted(w for _, w in srcset(image["srcset"]))
        wanted = next((w for w in widths if w >= image["width"] * 2), widths[-1])
        chosen = next(w for u, w in srcset(image["srcset"])
                      if absolute(u) == unquote(image["src"]))
        assert chosen == wanted, (image, wanted)
    by_product: dict[str, list[int]] = {}
    for image in images:  # document order
        by_product.setdefault(image["product"], []).append(image["position"])
    assert list(by_product) == [f"product-{p}" for p in PRODUCTS]
    assert all(p == sorted(p) and p[0] == 0 for p in by_product.values())
    context.close()


@pytest.mark.parametrize("column", ["atl", "tilte", "titel", "tgas"])
def test_a_misspelt_catalog_column_is_reported(tmp_path, column):
    from engine.catalog import load_catalog
    from engine.errors import ConfigError

    P.scene(64, 64).jpegsave(str(tmp_path / "a.jpg"))
    (tmp_path / "list.csv").write_text(f"id,path,{column}\na,a.jpg,x\n")
    with pytest.raises(ConfigError, match=f"`{column}` looks like a misspelling"):
        load_catalog(tmp_path / "list.csv")


def test_catalog_data_is_kept_per_master(tmp_path):
    from engine.catalog import load_catalog

    P.scene(64, 64).jpegsave(str(tmp_path / "a.jpg"))
    (tmp_path / "list.csv").write_text("id,path,alt,title,tags,season,ean\n"
                                       "a,a.jpg,Front,Shoe,red| sale,SS26,4006381333931\n")
    (master,) = load_catalog(tmp_path / "list.csv")
    assert (master.alt, master.title, master.tags) == ("Front", "Shoe", ("red", "sale"))
    assert master.extra == {"season": "SS26", "ean": "4006381333931"}


def test_the_gallery_streams_a_product_at_a_time(tmp_path, monkeypatch):
    """api.gallery reads the manifest a batch at a time and writes each product once its last
    row is read: products whose masters the catalog interleaves still come whole, in catalog
    order, with the same bytes as the gallery of every row in memory; only the products still
    open are held."""
    from engine.manifest import read_rows
    from engine.publish import gallery as module
    from engine.store import Store

    masters = tmp_path / "masters"
    masters.mkdir()
    listing = [("a-0", "A", 0), ("b-0", "B", 0), ("a-1", "A", 1), ("ed", None, None),
               ("c-1", "C", 1), ("c-0", "C", 0), ("d-0", "D", 0)]
    lines = ["id,path,product,position,role,alt,title"]
    for name, product, position in listing:
        P.scene(640, 480).jpegsave(str(masters / f"{name}.jpg"))
        role = "editorial" if product is None else "product"
        lines.append(f"{name},masters/{name}.jpg,{product or ''},{'' if position is None else position},"
                     f"{role},Alt {name},Title {name}")
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert api.render(tmp_path / "list.csv", out, channels=["web"],
                      config_dir=fixed_config(tmp_path / "config")).exit_code == 0

    whole = module.gallery(read_rows(Store(out)), out, BASE)
    streamed = api._streamed

    def small_batches(store, columns=None):  # noqa: ANN001, ANN202 (api._streamed's signature)
        for table in streamed(store, columns):
            for start in range(0, table.num_rows, 5):  # products span batches
                yield table.slice(start, 5)

    held: list[int] = []  # products open each time one is taken to be written
    take = module.Gather.take

    def counted(self, name):  # noqa: ANN001, ANN202
        held.append(len(self.products))
        return take(self, name)

    monkeypatch.setattr(api, "_streamed", small_batches)
    monkeypatch.setattr(module.Gather, "take", counted)
    text = api.gallery(out, BASE)
    assert text == json.dumps(whole, indent=1, ensure_ascii=False) + "\n"
    doc = json.loads(text)
    assert [p["id"] for p in doc["products"]] == ["A", "B", "C", "D"]
    assert [[i["master_id"] for i in p["images"]] for p in doc["products"]] == [
        ["a-0", "a-1"], ["b-0"], ["c-0", "c-1"], ["d-0"]]
    assert [e["master_id"] for e in doc["editorial"]] == ["ed"]
    assert held and max(held) <= 2  # A stays open across B; never every product at once
    html = api.gallery(out, BASE, "html")
    assert html == "".join(module.html_chunks(whole["products"], lambda: whole["editorial"],
                                              f"Storefront: {out.name}"))
    assert html.count("<section class=\"product\"") == 4 and html.endswith("</html>\n")
