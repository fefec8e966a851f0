"""Safe nights through the API: last good files stay published, the removal guard, the stored
configuration, ownership of OUT, and the commit protocol (journal, pending history, recover).

The same nights against a real `fanout` process are in test_faults.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import problem_images as P
import pyarrow.parquet as pq
import pytest
from helpers import assert_consistent, channel_toml, load, read

from benchmarks.bytes import fixed_config
from engine import api, manifest
from engine.errors import ConfigError, RemovalRefused
from engine.store import Store

CHANNELS = ["email"]
_FIXED: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _fixed_qualities(tmp_path_factory: pytest.TempPathFactory) -> None:
    _FIXED[:] = [fixed_config(tmp_path_factory.mktemp("fixed-config"))]


def render(*args, **kwargs) -> api.RunResult:  # noqa: ANN002, ANN003 (api.render's)
    """api.render with the built-in channels at fixed qualities (no quality search: what a
    safe night keeps, removes and records does not depend on how a quality was found; a
    third of the time). A test that passes its own config_dir gets it."""
    kwargs.setdefault("config_dir", _FIXED[0])
    return api.render(*args, **kwargs)


def write_listing(folder: Path, names: list[str], rows: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        if not (folder / f"{name}.jpg").exists():
            P.scene(360 + 20 * i, 240).jpegsave(str(folder / f"{name}.jpg"), Q=90)
    listing = folder / "catalog.csv"
    listing.write_text("id,path\n" + "".join(f"{n},{n}.jpg\n" for n in (rows or names)))
    return listing


def served(out: Path) -> dict[str, str]:
    """Published files and their sha256, as the manifest records them."""
    return {r["path"]: r["sha256"] for r in read(out).to_pylist()
            if r["status"] in manifest.PUBLISHED}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def published(tmp_path: Path):
    masters = tmp_path / "masters"
    listing = write_listing(masters, list("abcdef"))
    out = tmp_path / "out"
    first = render(listing, out, channels=CHANNELS)
    assert first.exit_code == 0 and len(first.rows) == 12
    return masters, listing, out


def test_a_master_that_cannot_be_read_keeps_its_published_files(published):
    masters, listing, out = published
    before = served(out)
    (masters / "b.jpg").unlink()  # still listed: a sync glitch
    (masters / "c.jpg").write_bytes((masters / "a.jpg").read_bytes()[:400])  # a corrupt upload
    second = render(listing, out, channels=CHANNELS)
    assert second.exit_code == 1 and not second.removed
    rows = {(r["master_id"], r["output"]): r for r in read(out).to_pylist()}
    for m in "bc":
        for o in ("w600", "w1200"):
            row = rows[(m, o)]
            assert row["status"] == "kept" and row["stale_since"] == second.run_id
            assert row["path"] and row["sha256"] == before[row["path"]]
            assert digest(out / row["path"]) == row["sha256"]
            assert load(out / row["path"]).width == int(o[1:])
    assert "file not found" in rows[("b", "w600")]["error"]
    assert "c.jpg" in rows[("c", "w600")]["error"]
    assert served(out) == before  # every file the store served is still there, unchanged
    assert_consistent(out)
    change = api.diff(out)
    assert {(r["master_id"], r["status"]) for r in change.failed} == {("b", "kept"), ("c", "kept")}
    assert not change.removed
    assert not api.check(out).problems

    third = render(listing, out, channels=CHANNELS)  # still failing: since stays
    kept = [r for r in third.rows if r["status"] == "kept"]
    assert len(kept) == 4 and {r["stale_since"] for r in kept} == {second.run_id}
    P.scene(380, 240).jpegsave(str(masters / "b.jpg"), Q=90)  # back: re-rendered
    fourth = render(listing, out, channels=CHANNELS)
    statuses = {(r["master_id"], r["output"]): r["status"] for r in fourth.rows}
    assert statuses[("b", "w600")] == "ok" and statuses[("c", "w600")] == "kept"
    assert_consistent(out)


def test_force_keeps_last_good_too(published):
    masters, listing, out = published
    before = served(out)
    (masters / "d.jpg").write_bytes(b"")
    result = render(listing, out, channels=CHANNELS, force=True)
    assert sorted(r["status"] for r in result.failed) == ["kept", "kept"]
    of_d = [p for p in before if "/d/" in p]
    assert len(of_d) == 2 and all(served(out)[p] == before[p] for p in of_d)
    assert_consistent(out)


def test_removal_guard_refuses_and_changes_nothing(published):
    masters, listing, out = published
    listing.write_text("id,path\n")  # an export that came back empty
    manifest_bytes = (out / "manifest.parquet").read_bytes()
    files = {p: digest(out / p) for p in served(out)}
    with pytest.raises(RemovalRefused) as refused:
        render(listing, out, channels=CHANNELS)
    assert len(refused.value.paths) == 12 and refused.value.total == 12
    assert "every published file" in str(refused.value)
    assert (out / "manifest.parquet").read_bytes() == manifest_bytes
    assert {p: digest(out / p) for p in files} == files
    assert len(manifest.runs(Store(out))) == 1

    write_listing(masters, [], rows=["a", "b"])  # cut short: 8 of 12 files would go
    with pytest.raises(RemovalRefused) as refused:
        render(listing, out, channels=CHANNELS)
    assert sorted(refused.value.paths)[:2] == ["email/c/w1200.jpg", "email/c/w600.jpg"]
    with pytest.raises(RemovalRefused):
        render(listing, out, channels=CHANNELS, max_removals="5")
    done = render(listing, out, channels=CHANNELS, max_removals="70%")
    assert len(done.removed) == 8 and set(served(out)) == {
        f"email/{m}/w{w}.jpg" for m in "ab" for w in (600, 1200)}
    assert_consistent(out)


def test_removal_guard_allows_an_ordinary_change_and_explicit_permission(published):
    masters, listing, out = published
    write_listing(masters, [], rows=list("abcde"))  # one product retired: 2 files
    assert len(render(listing, out, channels=CHANNELS).removed) == 2
    listing.write_text("id,path\n")
    result = render(listing, out, channels=CHANNELS, allow_removals=True)
    assert len(result.removed) == 10 and not served(out)
    with pytest.raises(ConfigError, match="--max-removals"):
        render(listing, out, channels=CHANNELS, max_removals="lots")


def custom_config(root: Path) -> Path:
    (root / "presets").mkdir(parents=True)
    (root / "channels").mkdir()
    (root / "presets" / "tiny.toml").write_text(
        '[tiny-100]\nresize = { width = 100, fit = "fit" }\nformat = "png"\n')
    (root / "channels" / "shop.toml").write_text(channel_toml("shop", {"thumb": "tiny-100"}))
    return root


def test_out_remembers_its_configuration(tmp_path: Path):
    listing = write_listing(tmp_path / "masters", ["a", "b"])
    cfg = custom_config(tmp_path / "cfg")
    out = tmp_path / "out"
    first = api.render(listing, out, channels=["shop"], config_dir=cfg)
    assert [r["path"] for r in first.rows] == ["shop/a/thumb.png", "shop/b/thumb.png"]
    notes: list[str] = []
    second = api.render(listing, out, channels=["shop"], on_info=notes.append)
    assert {r["status"] for r in second.rows} == {"skipped"} and not second.removed
    assert any("configuration stored with OUT" in n for n in notes)
    assert not api.check(out).problems  # check too finds the channel without --config-dir
    with pytest.raises(ConfigError, match="unknown channel 'shop'"):
        api.render(listing, out, channels=["shop"], reset_config=True)
    # the built-in channels: the shop channel's rows are carried, its files stay
    shop = {p: s for p, s in served(out).items() if p.startswith("shop/")}
    api.render(listing, out, channels=["email"], reset_config=True)
    assert {p: s for p, s in served(out).items() if p.startswith("shop/")} == shop
    assert all(digest(out / p) == s for p, s in shop.items())


def test_ownership_foreign_files_and_symlinks(tmp_path: Path):
    listing = write_listing(tmp_path / "masters", ["a", "b"])
    out = tmp_path / "out"
    outside = tmp_path / "elsewhere"
    (outside / "b").mkdir(parents=True)
    (outside / "b" / "w600.jpg").write_bytes(b"not fanout's")
    (out / "email").mkdir(parents=True)
    (out / "email" / "notes.txt").write_text("the team's notes")
    (out / "email" / "a").mkdir()
    (out / "email" / "a" / "w1200.jpg").write_bytes(b"a file fanout did not write")
    (out / "email" / "b").symlink_to(outside / "b")
    result = render(listing, out, channels=CHANNELS)
    errors = {(r["master_id"], r["output"]): r["error"] for r in result.failed}
    assert "exists and was not written by fanout" in errors[("a", "w1200")]
    assert "email/b is a symbolic link" in errors[("b", "w600")]  # a file behind the link
    assert "email/b is a symbolic link" in errors[("b", "w1200")]
    assert (out / "email" / "a" / "w1200.jpg").read_bytes() == b"a file fanout did not write"
    assert (outside / "b" / "w600.jpg").read_bytes() == b"not fanout's"
    assert sorted(p.name for p in (outside / "b").iterdir()) == ["w600.jpg"]
    assert load(out / "email" / "a" / "w600.jpg").width == 600
    check = api.check(out)
    assert not check.problems
    assert {"email/notes.txt", "email/a/w1200.jpg", "email/b"} <= set(check.foreign)
    listing.write_text("id,path\na,a.jpg\n")  # b leaves: nothing of b's was fanout's
    render(listing, out, channels=CHANNELS)
    assert (out / "email" / "notes.txt").is_file() and (out / "email" / "b").is_symlink()
    assert (outside / "b" / "w600.jpg").read_bytes() == b"not fanout's"


def test_out_may_not_be_the_catalog_folder(tmp_path: Path):
    masters = tmp_path / "masters"
    write_listing(masters, ["a"])
    with pytest.raises(ConfigError, match="catalog's folder"):
        render(masters, masters, channels=CHANNELS)
    assert sorted(p.name for p in masters.iterdir()) == ["a.jpg", "catalog.csv"]


def test_masters_kept_under_out_are_never_deleted(tmp_path: Path):
    out = tmp_path / "out"
    masters = out / "email" / "masters"  # a team keeps its masters inside OUT
    listing = write_listing(masters, ["a", "b"])
    render(listing, out, channels=CHANNELS)
    listing.write_text("id,path\na,a.jpg\n")
    assert len(render(listing, out, channels=CHANNELS, allow_removals=True).removed) == 2
    assert (masters / "b.jpg").is_file() and (masters / "a.jpg").is_file()


def test_an_uncommitted_run_leaves_no_history_and_is_undone(published, monkeypatch):
    masters, listing, out = published
    before = served(out)
    P.scene(500, 300).jpegsave(str(masters / "g.jpg"), Q=90)
    listing.write_text(listing.read_text() + "g,g.jpg\n")
    real = Store.write_file

    def full_disk(store, relative, local):  # noqa: ANN001, ANN202
        if relative == manifest.MANIFEST_NAME:  # the commit: the new manifest in place
            raise OSError(28, "No space left on device", store.path(relative))
        return real(store, relative, local)

    monkeypatch.setattr(Store, "write_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        render(listing, out, channels=CHANNELS)
    monkeypatch.undo()
    assert len(manifest.runs(Store(out))) == 1  # no history entry for a run that never committed
    assert not (out / "email" / "g").exists()  # the files it created are gone
    assert served(out) == before
    assert_consistent(out)
    again = render(listing, out, channels=CHANNELS)
    assert {r["status"] for r in again.rows if r["master_id"] == "g"} == {"ok"}
    assert not list((out / "_runs").glob("*.journal.parquet"))
    assert_consistent(out)


def test_a_killed_first_run_is_cleaned_up_by_the_next(tmp_path: Path):
    """What a first run killed with -9 leaves: files, a journal, no manifest."""
    listing = write_listing(tmp_path / "masters", ["a"])
    out = tmp_path / "out"
    store = Store(out)
    (out / "email" / "zz").mkdir(parents=True)
    (out / "email" / "zz" / "w600.jpg").write_bytes(b"half a night")
    manifest.write_journal(store, "20200101T000000000000Z-dead00", ["email/zz/w600.jpg"], [])
    (out / "email" / "zz" / ".w600.jpg.0123456789ab.tmp").write_bytes(b"partial")
    result = render(listing, out, channels=CHANNELS)
    assert result.cleaned == 1 and not (out / "email" / "zz").exists()
    assert_consistent(out)


def test_a_corrupt_manifest_stops_the_run_and_recover_rebuilds_it(published):
    masters, listing, out = published
    before = served(out)
    P.scene(300, 300).jpegsave(str(masters / "a.jpg"), Q=80)  # a change, so history differs
    render(listing, out, channels=CHANNELS)
    good = pq.read_table(out / "manifest.parquet").to_pylist()
    (out / "manifest.parquet").write_bytes(b"PAR1 broken")
    for attempt in (lambda: render(listing, out, channels=CHANNELS), lambda: api.check(out)):
        with pytest.raises(manifest.CorruptManifest, match="fanout recover"):
            attempt()
    rows, last = api.recover(out)
    assert rows == 12 and len(list((out / "_runs").glob("corrupt-manifest-*"))) == 1
    rebuilt = {(r["master_id"], r["output"]): r["sha256"] for r in read(out).to_pylist()}
    assert rebuilt == {(r["master_id"], r["output"]): r["sha256"] for r in good}
    assert set(served(out)) == set(before)
    rerun = render(listing, out, channels=CHANNELS)
    assert {r["status"] for r in rerun.rows} == {"skipped"}
    (out / "manifest.parquet").write_bytes(b"")  # empty: the same way out
    with pytest.raises(manifest.CorruptManifest, match="empty file"):
        api.check(out)


def test_new_history_rows_name_their_status(published):
    _, listing, out = published
    statuses = {str(s) for s in manifest.Status}
    assert statuses == {"ok", "skipped", "failed", "kept", "removed", "n/a"}
    assert os.path.isdir(out / "_config") and len(list((out / "_config").iterdir())) == 1


def test_a_vanished_video_master_keeps_its_files(tmp_path: Path):
    """Its kind cannot be told tonight (no file), so its video outputs are not even planned:
    they are kept all the same, because the master is still listed."""
    from engine.demo import product_video

    masters = tmp_path / "masters"
    masters.mkdir()
    product_video(masters / "clip.mp4", 320, 180, seconds=1.0, audio=False, noise=4)
    listing = write_listing(masters, ["a"])
    listing.write_text(listing.read_text() + "clip,clip.mp4\n")
    out = tmp_path / "out"
    assert render(listing, out, channels=CHANNELS).exit_code == 0
    before = served(out)
    assert any(p.startswith("email/clip/") for p in before)
    (masters / "clip.mp4").unlink()
    second = render(listing, out, channels=CHANNELS)
    assert second.exit_code == 1 and not second.removed
    kept = [r for r in read(out).to_pylist() if r["master_id"] == "clip"]
    assert kept and {r["status"] for r in kept} == {"kept"}
    assert {r["master_kind"] for r in kept} == {"video"}
    assert all("file not found" in r["error"] for r in kept)
    assert served(out) == before
    assert_consistent(out)


def test_scratch_folders_of_a_killed_process_are_removed(published, tmp_path, monkeypatch):
    import tempfile

    _, listing, out = published
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    dead = scratch_root / "fanout-run-999999999-abcd"  # no such pid
    (dead / "rows.parquet").parent.mkdir()
    (dead / "rows.parquet").write_bytes(b"spool of a killed run")
    alive = scratch_root / f"fanout-video-{os.getpid()}-abcd"
    alive.mkdir()
    other = scratch_root / "someone-elses"
    other.mkdir()
    render(listing, out, channels=CHANNELS)
    assert not dead.exists() and alive.is_dir() and other.is_dir()
    assert sorted(p.name for p in scratch_root.iterdir()) == sorted([alive.name, other.name])


@pytest.mark.slow
def test_an_unreachable_scheduler_leaves_no_out(tmp_path: Path):
    import dask

    listing = write_listing(tmp_path / "masters", ["a"])
    out = tmp_path / "out"
    # How long a run waits for the scheduler is dask's own setting (30 s unless configured).
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), pytest.raises(
            ConfigError, match="cannot reach"):
        render(listing, out, channels=CHANNELS, scheduler="tcp://127.0.0.1:9")
    assert not out.exists()


def test_the_report_shows_a_kept_file_with_its_error(published):
    masters, listing, out = published
    (masters / "b.jpg").unlink()
    render(listing, out, channels=CHANNELS)
    html = api.report(out).read_text()
    assert html.count('data-status="kept"') == 2 and 'id="kept-count">2<' in html
    assert "file not found (serving the file from run" in html
    assert 'src="email/b/w600.jpg"' in html  # the last good file is what the page shows
