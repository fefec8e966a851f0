"""The report in a real headless browser: Debian's chromium driven by playwright."""

from __future__ import annotations

from pathlib import Path

import problem_images as P
import pytest
from helpers import read

from engine import api

pytestmark = pytest.mark.slow  # a real browser


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report") / "masters"
    folder.mkdir()
    P.scene().jpegsave(str(folder / "shoe.jpg"))
    P.write_alpha(folder)
    P.write_truncated(folder)
    out = folder.parent / "out"
    assert api.render(folder, out, channels=["email", "web", "amazon"]).exit_code == 1
    return out


def test_report_loads_offline_with_the_manifests_counts_and_working_filters(browser, rendered):
    report = api.report(rendered)
    rows = read(rendered).to_pylist()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    page.wait_for_load_state("networkidle")
    assert errors == []
    assert all(u.startswith(("file://", "data:")) for u in requests), "no network needed"

    def number(selector: str) -> int:
        return int(page.inner_text(selector))

    assert number("#total-count") == len(rows) == page.locator("figure.card").count()
    assert number("#failed-count") == sum(r["status"] == "failed" for r in rows) > 0
    assert number("#ok-count") == sum(r["status"] == "ok" for r in rows)
    assert number("#master-count") == 3
    assert number("#shown-count") == len(rows)
    assert page.locator("figure.failed .error").first.inner_text().count("truncated") >= 1

    page.select_option("#status-filter", "failed")
    assert number("#shown-count") == sum(r["status"] == "failed" for r in rows)
    assert page.locator("figure.card:visible").count() == number("#shown-count")
    page.select_option("#status-filter", "")
    page.select_option("#channel-filter", "amazon")
    assert number("#shown-count") == sum(r["channel"] == "amazon" for r in rows)
    page.select_option("#channel-filter", "")

    loaded = page.evaluate("Array.from(document.images).slice(0, 6).every("
                           "i => i.complete && i.naturalWidth > 0)")
    assert loaded, "thumbnails load from OUT"
    shot = rendered / "shot.png"
    page.screenshot(path=str(shot))
    import pyvips

    image = pyvips.Image.new_from_file(str(shot))
    assert image.deviate() > 10, "the screenshot is not blank"
    page.close()


def test_the_demos_report_shows_every_derivative(browser, demo_out):
    _, folder = demo_out
    out = folder / "out"
    rows = read(out).to_pylist()
    page = browser.new_page()
    page.goto(api.report(out).as_uri())
    assert int(page.inner_text("#total-count")) == len(rows) == page.locator(
        "figure.card").count()
    assert int(page.inner_text("#master-count")) == len({r["master_id"] for r in rows})
    for channel in {r["channel"] for r in rows}:
        page.select_option("#channel-filter", channel)
        assert int(page.inner_text("#shown-count")) == sum(r["channel"] == channel for r in rows)
    page.close()
