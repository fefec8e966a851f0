"""`fanout report` at catalog scale: the page shows a selection (channels, statuses, a master
glob, at most --limit masters, failures first), the header counts the whole manifest, and only
the shown masters' rows are ever made Python rows. The page itself in a browser: test_report."""

from __future__ import annotations

import re
from pathlib import Path

import problem_images as P
import pytest
from click.testing import CliRunner
from helpers import read

from benchmarks.bytes import fixed_config
from engine import api, manifest
from engine.cli import main

CHANNELS = ["email", "amazon"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report-select")
    folder = root / "masters"
    folder.mkdir()
    for name in ("shoe-1", "shoe-2", "bag-1"):
        P.scene().jpegsave(str(folder / f"{name}.jpg"))
    P.write_truncated(folder)  # fails: its derivatives are failed rows
    out = root / "out"
    result = api.render(folder, out, channels=CHANNELS, config_dir=fixed_config(root / "config"))
    assert result.exit_code == 1
    return out


def page(out: Path, **options) -> tuple[str, list[str], list[tuple[str, str]]]:  # noqa: ANN003
    """The written page, its masters' sections, and its cards' (channel, status)."""
    html = api.report(out, **options).read_text()
    masters = re.findall(r'<section class="master" data-master="([^"]+)"', html)
    cards = re.findall(r'<figure class="card [^"]*" data-channel="([^"]*)" data-status="([^"]*)"',
                       html)
    return html, masters, cards


def count(html: str, name: str) -> int:
    return int(re.search(rf'id="{name}">(\d+)<', html)[1])


def test_the_whole_page_without_options_and_the_manifests_counts(shop):
    rows = read(shop).to_pylist()
    html, masters, cards = page(shop)
    assert sorted(masters) == ["bag-1", "shoe-1", "shoe-2", "truncated"]
    assert len(cards) == len(rows) == count(html, "total-count")
    assert count(html, "failed-count") == sum(r["status"] == "failed" for r in rows) > 0
    assert 'id="selection-note"' not in html


def test_a_limit_shows_failures_first_and_the_header_still_counts_everything(shop, monkeypatch):
    rows = read(shop).to_pylist()
    made = []
    real = manifest.from_table
    monkeypatch.setattr(manifest, "from_table", lambda t: made.append(t.num_rows) or real(t))
    html, masters, cards = page(shop, limit=1)
    assert masters == ["truncated"]
    assert {status for _, status in cards} == {"failed"}
    assert made == [len(cards)]  # the other masters' rows never became Python rows
    assert count(html, "total-count") == len(rows) and count(html, "master-count") == 4
    note = re.search(r'id="selection-note">([^<]*)<', html)[1]
    assert f"showing {len(cards)} of {len(rows)} derivatives, 1 of 4 masters" in note
    assert "--limit" in note


def test_channels_statuses_and_a_master_glob_select_rows(shop):
    _, masters, cards = page(shop, channels=["amazon"], master="shoe-*")
    assert masters == ["shoe-1", "shoe-2"] and {c for c, _ in cards} == {"amazon"}
    rows = read(shop).to_pylist()
    assert len(cards) == sum(r["channel"] == "amazon" and r["master_id"].startswith("shoe-")
                             for r in rows)
    _, masters, cards = page(shop, statuses=["failed"])
    assert masters == ["truncated"] and {s for _, s in cards} == {"failed"}
    _, masters, cards = page(shop, master="shoe-?", statuses=["ok"])
    assert masters == ["shoe-1", "shoe-2"] and {s for _, s in cards} == {"ok"}
    html, masters, _ = page(shop, master="nothing-*")
    assert masters == [] and "0 of 0 masters matching master nothing-*" in html


def test_the_cli_says_what_the_page_leaves_out(shop):
    result = CliRunner().invoke(main, ["report", str(shop), "--limit", "2", "--channel", "email"])
    assert result.exit_code == 0, result.output
    assert "2 of 4 masters matching channel email" in result.stderr
    assert f"report: {shop / 'report.html'}" in result.stdout
    every = CliRunner().invoke(main, ["report", str(shop), "--limit", "0"])
    assert every.exit_code == 0 and "showing" not in every.output
    assert len(page(shop, limit=0)[1]) == 4  # 0 from Python too: every master
    bad = CliRunner().invoke(main, ["report", str(shop), "--status", "gone"])
    assert bad.exit_code == 2
