"""Fault injection (issue 12, item 8): scripted nights against a real `fanout` process.

Every night is followed by the invariants of `nights.Night.night`: nothing published was lost
(same bytes, or replaced by a newer good render), nothing outside OUT changed, `fanout check
OUT` agrees with the disk, and no traceback was printed. Masters are small generated JPEGs and
the config (channels `shop` and `mail`, see nights.py) has small presets, so a night is a
second or two; the kill tests use the built-in amazon channel (large files at a fixed quality)
for a render long enough to be killed in the middle of.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess

import pytest
from nights import (
    Night,
    assert_matches_disk,
    assert_nothing_lost,
    assert_same_tree,
    by_key,
    entries,
    history,
    rows,
    run_ids,
    section,
    sha,
    snapshot,
    stop,
    wait_for,
    write_config,
    write_master,
)

from engine import api

SHOP = ("thumb", "card")


def shop_paths(*ids: str) -> set[str]:
    return {f"shop/{i}/{o}.jpg" for i in ids for o in SHOP}


def statuses(out) -> dict[tuple[str, str], str]:  # noqa: ANN001
    return {(r["master_id"], r["output"]): r["status"] for r in rows(out)}


def lines_with(text: str, *needles: str) -> list[str]:
    return [line for line in text.splitlines() if all(n in line for n in needles)]


def latest_run(out) -> str:  # noqa: ANN001
    return run_ids(out)[-1]


@pytest.fixture()
def world(tmp_path) -> Night:  # noqa: ANN001
    """Four masters in a CSV listing, rendered once (channel shop: 8 files)."""
    w = Night(tmp_path)
    w.night()
    assert set(snapshot(w.out)) == shop_paths("p0", "p1", "p2", "p3")
    return w


# ------------------------------------------------------------------ masters that go wrong


def _make_unreadable(path) -> str:  # noqa: ANN001
    """chmod 000 when that stops us reading it; as root (which reads anything), replace it
    with a truncated JPEG instead."""
    if os.geteuid() != 0:
        path.chmod(0)
        return "chmod 000"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return "truncated"

@pytest.mark.slow  # several fanout runs (5-9 s)
def test_vanished_unreadable_and_corrupt_masters_keep_their_published_files(world):
    w = world
    first = by_key(w.out)
    (w.masters / "p1.jpg").unlink()  # vanished: still listed, file gone
    (w.masters / "p2.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG at all" * 10)
    _make_unreadable(w.masters / "p3.jpg")
    try:
        run = w.night(rc=1)
        night2 = by_key(w.out)
        run2 = night2[("p0", "shop", "thumb")]["run_id"]
        assert night2[("p0", "shop", "thumb")]["status"] == "skipped"
        for key, prev in first.items():
            if key[0] == "p0":
                continue
            row = night2[key]
            assert row["status"] == "kept", (key, row["status"], row["error"])
            for column in ("path", "sha256", "bytes", "width", "height"):
                assert row[column] == prev[column], (key, column)
            assert row["error"], key
            assert row["stale_since"] == run2, (key, row["stale_since"], run2)
        # the failures are reported, and `fanout diff` lists them under failed
        for master in ("p1", "p2", "p3"):
            assert master in run.text, f"{master} not reported\n{run}"
        change = w.diff()
        assert change.rc == 0, change
        failed = section(change.stdout, "failed")
        for master in ("p1", "p2", "p3"):
            assert any(line.split()[0] == master for line in failed), f"{master}\n{change}"

        # a second failing night: still kept, still stale since the first failing run
        w.night(rc=1)
        night3 = by_key(w.out)
        for key in first:
            if key[0] != "p0":
                assert night3[key]["status"] == "kept"
                assert night3[key]["stale_since"] == run2
    finally:
        (w.masters / "p3.jpg").chmod(0o644)

    # the masters come back (p1 with new pixels): fresh renders, nothing kept any more
    w.add("p1", variant=1)
    w.add("p2", index=2)
    w.add("p3", index=3)
    w.night(rc=0)
    final = by_key(w.out)
    assert all(r["status"] in ("ok", "skipped") for r in final.values()), final
    assert all(r.get("stale_since") is None for r in final.values())
    assert final[("p1", "shop", "thumb")]["status"] == "ok"
    assert final[("p1", "shop", "thumb")]["sha256"] != first[("p1", "shop", "thumb")]["sha256"]

@pytest.mark.slow  # several fanout runs (5-9 s)
def test_a_corrupt_master_in_a_catalog_folder_keeps_its_files(tmp_path):
    w = Night(tmp_path, listing=False)
    w.night()
    first = by_key(w.out)
    data = (w.masters / "p2.jpg").read_bytes()
    (w.masters / "p2.jpg").write_bytes(data[: len(data) // 4])
    w.night(rc=1)
    got = by_key(w.out)
    for key, prev in first.items():
        expected = "kept" if key[0] == "p2" else "skipped"
        assert got[key]["status"] == expected, (key, got[key]["status"], got[key]["error"])
        assert got[key]["sha256"] == prev["sha256"]


def test_a_master_that_left_the_listing_has_its_files_removed(world):
    w = world
    w.write_listing(["p0", "p1", "p2"])
    w.night(gone=shop_paths("p3"))
    assert not (w.out / "shop" / "p3").exists()
    removed = [r for r in history(w.out, latest_run(w.out)) if r["status"] == "removed"]
    assert {r["path"] for r in removed} == shop_paths("p3")
    change = w.diff()
    assert "removed: 2" in change.stdout, change


# ------------------------------------------------------------------ the removal guard


def _frozen(w: Night) -> dict:
    """Everything a refused run must leave exactly as it was: every byte under OUT."""
    return {p: sha(w.out / p) for p in (os.path.relpath(os.path.join(d, n), w.out)
                                        for d, _, names in os.walk(w.out) for n in names)
            if not p.endswith(".fanout.lock")}


@pytest.fixture()
def big_world(tmp_path) -> Night:  # noqa: ANN001
    """Twelve masters in a listing, rendered once (24 files)."""
    w = Night(tmp_path, ids=[f"p{i}" for i in range(12)])
    w.night()
    assert len(snapshot(w.out)) == 24
    return w


def assert_lists_removals(run, paths) -> None:  # noqa: ANN001
    """A refused run prints what it would remove: every path (there are 12 or fewer here)."""
    missing = sorted(p for p in paths if p not in run.text)
    assert not missing, f"the refusal should list what it would remove: {missing}\n{run}"


def test_an_ordinary_removal_passes_the_guard_in_a_small_store(big_world):
    """The default limit is 10% of the published files, or up to 10 files while under a
    quarter of them: 6 of 24 may go (3 products retired), 10 of 24 may not."""
    w = big_world
    w.write_listing([f"p{i}" for i in range(9)])  # p9..p11 leave: 6 files
    w.night(gone=shop_paths(*(f"p{i}" for i in range(9, 12))))
    w.write_listing([f"p{i}" for i in range(4)])  # p4..p8 leave: 10 of 18 files
    assert w.render().rc == 2


@pytest.mark.parametrize("allow, allowed", [
    ((), False),
    (("--max-removals", "11"), False),
    (("--max-removals", "40%"), False),
    (("--max-removals", "12"), True),
    (("--max-removals", "50%"), True),
    (("--allow-removals",), True),
], ids=["default", "max-11", "max-40pct", "max-12", "max-50pct", "allow-removals"])
def test_more_removals_than_the_guard_allows_change_nothing(big_world, allow, allowed):
    w = big_world
    leaving = [f"p{i}" for i in range(6, 12)]  # 12 files: half of the 24 published
    w.add("p0", variant=1)  # and a change and a new master, which a refused run must not render
    w.add("new")
    w.write_listing([*(f"p{i}" for i in range(6)), "new"])
    if allowed:
        w.night(*allow, gone=shop_paths(*leaving))
        got = statuses(w.out)
        assert got[("new", "thumb")] == "ok" and got[("p0", "thumb")] == "ok"
        removed = [r for r in history(w.out, latest_run(w.out)) if r["status"] == "removed"]
        assert {r["path"] for r in removed} == shop_paths(*leaving)
        return
    frozen, runs = _frozen(w), run_ids(w.out)
    outside = w.outside()
    run = w.render(*allow)
    assert run.rc == 2, run
    assert_lists_removals(run, shop_paths(*leaving))
    assert _frozen(w) == frozen, "a refused run changed OUT"
    assert run_ids(w.out) == runs
    w.verify({}, outside)


@pytest.mark.parametrize("catalog", ["header-only listing", "empty folder", "all replaced"])
def test_a_run_that_would_remove_every_published_file_is_refused(world, catalog):
    w = world
    if catalog == "header-only listing":
        w.write_listing([])
        target = w.listing_path
    elif catalog == "empty folder":  # say the masters' mount did not come up
        target = w.root / "mount"
        target.mkdir()
    else:
        w.add("q0")
        w.write_listing(["q0"])  # 8 removals (under 10), but all of the channel's files
        target = w.listing_path
    frozen, runs = _frozen(w), run_ids(w.out)
    before, outside = snapshot(w.out), w.outside()
    run = w.render(catalog=target)
    assert run.rc == 2, run
    assert _frozen(w) == frozen, "a refused run changed OUT"
    assert run_ids(w.out) == runs
    w.verify(before, outside)
    assert_lists_removals(run, shop_paths("p0", "p1", "p2", "p3"))


# ------------------------------------------------------------------ OUT remembers its config


@pytest.fixture()
def configured(tmp_path) -> Night:  # noqa: ANN001
    """Rendered once with --config-dir: its email channel makes one 160 px `small` JPEG."""
    cfg = write_config(tmp_path / "cfg-email", {
        "email": 'name = "email"\n[[outputs]]\nname = "small"\npreset = "tiny-thumb"\n'})
    w = Night(tmp_path, ids=["p0", "p1", "p2"], channels=["email"], config=cfg)
    w.night()
    assert (w.out / "_config").is_dir() and any((w.out / "_config").rglob("*"))
    assert set(snapshot(w.out)) == SMALL
    return w


SMALL = {f"email/{i}/small.jpg" for i in ("p0", "p1", "p2")}

@pytest.mark.slow  # several fanout runs (5-9 s)
def test_out_remembers_its_configuration(configured):
    w = configured
    # the operator forgets --config-dir: the stored one is used, nothing changes
    run = w.night(config=False, check_rc=None)
    assert set(statuses(w.out).values()) == {"skipped"}, statuses(w.out)
    assert lines_with(run.text.lower(), "stored", "config"), \
        f"no line about the stored config\n{run}"
    checked = w.check(config=False)
    assert checked.rc == 0, checked

    # --reset-config: the built-in email channel would remove every small.jpg: refused
    frozen, runs = _frozen(w), run_ids(w.out)
    outside = w.outside()
    run = w.render("--reset-config", config=False)
    assert run.rc == 2, run
    assert_lists_removals(run, SMALL)
    assert _frozen(w) == frozen and run_ids(w.out) == runs
    w.verify({}, outside, check_rc=None)

    # ... unless allowed: then the built-in outputs replace them
    w.night("--reset-config", "--allow-removals", config=False, gone=SMALL, check_rc=None)
    assert {r["output"] for r in rows(w.out)} == {"w600", "w1200"}
    assert all(r["status"] == "ok" for r in rows(w.out))


def test_check_without_config_dir_says_it_uses_the_stored_configuration(configured):
    checked = configured.check(config=False)
    assert checked.rc == 0, checked
    assert lines_with(checked.text.lower(), "stored", "config"), (
        f"no line about the stored configuration\n{checked}")


# ------------------------------------------------------------------ ownership


def test_foreign_files_in_out_are_never_deleted_and_check_reports_them(world):
    w = world
    planted = {
        "shop/notes.txt": b"the photographer's notes\n",
        "shop/p3/notes.txt": b"beside a master's outputs that will go\n",
    }
    for rel, data in planted.items():
        (w.out / rel).write_bytes(data)
    write_master(w.out / "shop" / "masters" / "x.jpg", variant=2)
    planted["shop/masters/x.jpg"] = (w.out / "shop" / "masters" / "x.jpg").read_bytes()

    w.add("p0", variant=1)
    w.write_listing(["p0", "p1", "p2"])  # p3 leaves: its outputs go, its neighbour stays
    w.night(gone=shop_paths("p3"), foreign=planted, check_rc=None)
    w.night("--force", foreign=planted, check_rc=None)
    for rel, data in planted.items():
        assert (w.out / rel).read_bytes() == data, rel
    checked = w.check()
    assert checked.rc == 0, checked  # foreign files are listed, not problems of fanout's files
    for rel in planted:
        assert lines_with(checked.text, "foreign", rel), f"{rel} not reported foreign\n{checked}"


def test_a_foreign_file_where_a_new_output_belongs_is_not_overwritten(world):
    w = world
    w.add("p9")
    w.write_listing()
    foreign = w.out / "shop" / "p9" / "thumb.jpg"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"someone else's file\n")
    w.night(rc=1, foreign={"shop/p9/thumb.jpg"}, check_rc=None)
    assert foreign.read_bytes() == b"someone else's file\n"
    got = by_key(w.out)
    assert got[("p9", "shop", "thumb")]["status"] == "failed"
    assert "shop/p9/thumb.jpg" in got[("p9", "shop", "thumb")]["error"]
    assert got[("p9", "shop", "card")]["status"] == "ok"
    checked = w.check()
    assert checked.rc == 0 and lines_with(checked.text, "foreign", "shop/p9/thumb.jpg"), checked

@pytest.mark.slow  # several fanout runs (5-9 s)
def test_a_symlinked_channel_folder_is_never_written_through(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "p0").mkdir(parents=True)
    (elsewhere / "p0" / "thumb.jpg").write_bytes(b"a file outside OUT\n")
    (elsewhere / "keep.txt").write_text("outside\n")
    w = Night(tmp_path, channels=["shop", "mail"])
    w.out.mkdir()
    (w.out / "shop").symlink_to(elsewhere, target_is_directory=True)
    w.night(rc=1, foreign={"shop"}, check_rc=None)
    got = by_key(w.out)
    for (master, channel, output), row in got.items():
        expected = "failed" if channel == "shop" else "ok"
        assert row["status"] == expected, (master, channel, output, row["error"])
    assert w.check().rc in (0, 1)
    # and a rerun with a master gone from the listing deletes nothing through the link
    w.write_listing(["p1", "p2", "p3"])
    w.night(rc=1, foreign={"shop"}, gone={"mail/p0/small.jpg"}, check_rc=None)
    # every shop derivative failed because of the link, and says so
    for key, row in got.items():
        if key[1] == "shop":
            assert "symbolic link" in row["error"], (key, row["error"])


def test_a_symlinked_output_file_is_never_written_through(world):
    w = world
    target = w.root / "elsewhere.jpg"
    write_master(target, variant=2)
    link = w.out / "shop" / "p0" / "thumb.jpg"
    link.unlink()
    link.symlink_to(target)
    w.add("p0", variant=1)  # p0 changes: its thumb would be written over the link
    before = snapshot(w.out)
    before.pop("shop/p0/thumb.jpg", None)  # the test replaced that file itself
    w.night(rc=1, before=before, foreign={"shop/p0/thumb.jpg"}, check_rc=None)
    row = by_key(w.out)[("p0", "shop", "thumb")]
    assert row["status"] == "failed" and "symbolic link" in (row["error"] or ""), row
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert by_key(w.out)[("p0", "shop", "card")]["status"] == "ok"
    assert w.check().rc in (0, 1)


@pytest.mark.parametrize("spelling", ["same", "dotdot", "alias link"])
def test_out_equal_to_the_catalog_folder_is_refused(tmp_path, spelling):
    w = Night(tmp_path, listing=False)
    out = {"same": w.masters, "dotdot": w.masters / ".." / "masters",
           "alias link": tmp_path / "alias"}[spelling]
    if spelling == "alias link":
        out.symlink_to(w.masters, target_is_directory=True)
    outside = w.outside()
    run = w.fanout("render", str(w.masters), "--out", str(out), "--no-progress",
                   *w.channel_args(), *w.config_args())
    assert run.rc == 2, run
    assert_same_tree(outside, w.outside(), "render into the catalog folder")
    assert not w.leftover_tmp()


# ------------------------------------------------------------------ odd things on disk


@pytest.mark.parametrize("catalog", ["folder", "listing"])
def test_a_fifo_master_fails_alone_without_hanging(tmp_path, catalog):
    w = Night(tmp_path, ids=["p0", "p1", "p2"], listing=catalog == "listing")
    os.mkfifo(w.masters / "pipe.jpg")
    w.ids["pipe"] = "masters/pipe.jpg"
    if catalog == "listing":
        w.write_listing()
    w.night(rc=1, timeout=90)
    got = by_key(w.out)
    pipe = [r for k, r in got.items() if k[0] == "pipe"]
    assert pipe and all(r["status"] == "failed" and "FIFO" in (r["error"] or "")
                        for r in pipe), pipe
    assert all(r["status"] == "ok" for k, r in got.items() if k[0] != "pipe")


@pytest.mark.parametrize("where", ["new master", "existing output"])
def test_a_directory_where_an_output_belongs_fails_that_output_alone(world, where):
    w = world
    if where == "new master":
        master, rel = "p9", "shop/p9/thumb.jpg"
        w.add("p9")
        w.write_listing()
    else:
        master, rel = "p1", "shop/p1/thumb.jpg"
        (w.out / rel).unlink()
    before = snapshot(w.out)
    (w.out / rel).mkdir(parents=True)
    w.add("p0", variant=1)  # an unrelated change
    w.night(rc=1, before=before)
    assert (w.out / rel).is_dir()
    got = by_key(w.out)
    row = got[(master, "shop", "thumb")]
    assert row["status"] == "failed" and row["path"] is None, row
    assert rel in (row["error"] or ""), row["error"]
    assert got[(master, "shop", "card")]["status"] in ("ok", "skipped")
    assert got[("p0", "shop", "thumb")]["status"] == "ok"
    assert {s for (m, _), s in statuses(w.out).items() if m not in (master, "p0")} == {"skipped"}


# ------------------------------------------------------------------ a broken manifest


@pytest.mark.slow  # several fanout runs (5-9 s)
@pytest.mark.parametrize("damage", ["10 bytes", "empty"])
def test_a_corrupt_manifest_is_refused_until_recovered_from_history(world, damage):
    w = world
    w.add("p0", variant=1)
    w.write_listing(["p0", "p1", "p2"])
    w.night(gone=shop_paths("p3"))  # a second run: a re-render and a removal in history
    good = {(r["master_id"], r["channel"], r["output"], r["path"], r["sha256"])
            for r in rows(w.out)}
    before, outside = snapshot(w.out), w.outside()
    manifest = w.out / "manifest.parquet"
    data = manifest.read_bytes()
    manifest.write_bytes(data[:10] if damage == "10 bytes" else b"")
    files = {p: sha(w.out / p) for p in entries(w.out)}

    for run in (w.render(), w.check()):
        assert run.rc == 2, run
        assert lines_with(run.text, "manifest.parquet", "fanout recover"), (
            f"expected one line naming the manifest and `fanout recover OUT`\n{run}")
        assert {p: sha(w.out / p) for p in entries(w.out)} == files
    recovered = w.fanout("recover", str(w.out))
    assert recovered.rc == 0, recovered
    assert {(r["master_id"], r["channel"], r["output"], r["path"], r["sha256"])
            for r in rows(w.out)} == good
    w.night(before=before)
    assert set(statuses(w.out).values()) == {"skipped"}
    assert_same_tree(outside, w.outside(), "recovery")


# ------------------------------------------------------------------ kill -9, SIGINT, SIGTERM

KILL_IDS = [f"k{i:02d}" for i in range(40)]
EXPECTED_RC = {signal.SIGKILL: -signal.SIGKILL, signal.SIGINT: 130, signal.SIGTERM: 143}


def _some_output(out) -> bool:  # noqa: ANN001
    return out.is_dir() and any(not p.startswith(("manifest", ".")) and "/" in p
                                for p in entries(out))


KILLS = [(sig, point) for point in ("early", "mid-render", "rerun mid-render")
         for sig in (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)
         if point != "early" or sig == signal.SIGKILL]  # early (OUT just created, nothing
# rendered): kill -9 only, the hardest stop; SIGINT and SIGTERM are tested mid-render (here and
# in test_cli_safety), where their handler has work in flight to stop (20 s of suite time)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "point"), KILLS,
                         ids=[f"{p}-{ {9: 'kill-9', 2: 'sigint', 15: 'sigterm'}[s]}"
                              for s, p in KILLS])
def test_a_killed_run_then_a_normal_rerun(tmp_path, sig, point):
    # a fixed-quality channel: the kill tests time the engine's bookkeeping, not quality search
    w = Night(tmp_path, ids=KILL_IDS, channels=["amazon"], config=False)
    if point == "rerun mid-render":
        w.night()
        for n, master in enumerate(KILL_IDS):
            w.add(master, variant=1, index=n)
    before, outside = snapshot(w.out), w.outside()
    mtimes = {p: (w.out / p).stat().st_mtime_ns for p in before}

    def changed() -> bool:
        for p, t in mtimes.items():
            try:
                if (w.out / p).stat().st_mtime_ns != t:
                    return True
            except FileNotFoundError:
                return True
        return False

    reached = {"early": lambda: w.out.exists(), "mid-render": lambda: _some_output(w.out),
               "rerun mid-render": changed}[point]
    proc = w.start()
    if not wait_for(reached, proc, deadline_s=120):
        proc.kill()
        proc.wait()
        pytest.fail(f"the render ended before the kill point {point!r}\n{w.log()}")
    rc = stop(proc, sig)
    log = w.log()
    assert rc == EXPECTED_RC[sig], f"{signal.Signals(sig).name}: exit {rc}\n{log}"
    assert "Traceback" not in log.text, log
    assert_same_tree(outside, w.outside(), "the killed run")

    w.night(before=before)  # a normal rerun completes, and nothing published was lost
    assert len(rows(w.out)) == api.plan(w.catalog, w.channels).derivative_count
    assert all(r["status"] in ("ok", "skipped") for r in rows(w.out))
    assert_matches_disk(w.out)


# ------------------------------------------------------------------ disk full


@pytest.fixture()
def tiny_tmpfs(tmp_path):  # noqa: ANN001, ANN201
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MB tmpfs needs root")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path) -> None:  # noqa: ANN001
    """Write until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 16, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)


@pytest.mark.slow
def test_disk_full_commits_nothing_and_loses_nothing(tmp_path, tiny_tmpfs):
    w = Night(tmp_path, out=tiny_tmpfs / "out")
    w.exclude_outside.append(tiny_tmpfs)  # the filler lives there
    w.night()
    runs = run_ids(w.out)
    manifest = (w.out / "manifest.parquet").read_bytes()
    _fill(tiny_tmpfs / "filler")
    assert shutil.disk_usage(tiny_tmpfs).free < 4096

    w.add("p0", variant=1)
    before, outside = snapshot(w.out), w.outside()
    run = w.render()
    assert run.rc == 2, run
    assert (w.out / "manifest.parquet").read_bytes() == manifest
    assert run_ids(w.out) == runs, "a run that did not commit left a history entry"
    change = w.diff()
    assert change.rc == 0 and change.stdout.splitlines()[0].strip().endswith(runs[-1]), change
    w.verify(before, outside)

    (tiny_tmpfs / "filler").unlink()
    w.night()
    assert statuses(w.out)[("p0", "thumb")] == "ok"
    assert len(run_ids(w.out)) == len(runs) + 1
    assert_nothing_lost(before, w.out)
    # the refused night said why in one line naming the path
    assert lines_with(run.text, "No space left on device", str(tiny_tmpfs)), (
        f"expected a line naming the path and 'No space left on device'\n{run}")


# ------------------------------------------------------------------ the checks themselves


def test_the_invariants_catch_what_they_are_for(world):
    """The helpers fail on a lost or altered file, an unrecorded file, a temporary, a change
    outside OUT and a leftover scratch folder (so a passing night means something)."""
    w = world
    before, outside = snapshot(w.out), w.outside()
    (w.out / "shop" / "p1" / "card.jpg").write_bytes(b"altered")
    with pytest.raises(AssertionError, match="bytes changed"):
        assert_nothing_lost(before, w.out)
    (w.out / "shop" / "p1" / "card.jpg").unlink()
    with pytest.raises(AssertionError, match="missing"):
        assert_nothing_lost(before, w.out)
    with pytest.raises(AssertionError, match="no regular file"):
        assert_matches_disk(w.out)
    w.night(check_rc=None)  # re-rendered: fine again
    (w.out / "shop" / "stray.jpg").write_bytes(b"x")
    (w.out / "shop" / ".thumb.jpg.0123456789ab.tmp").write_bytes(b"x")
    with pytest.raises(AssertionError, match="not recorded"):
        assert_matches_disk(w.out)
    with pytest.raises(AssertionError, match="temporary left"):
        assert_matches_disk(w.out, foreign={"shop/stray.jpg"})
    (w.masters / "p0.jpg").write_bytes(b"changed")
    with pytest.raises(AssertionError, match="masters/p0.jpg"):
        assert_same_tree(outside, w.outside(), "test")
    (w.tmpdir / "fanout-run-x").mkdir()
    assert w.leftover_tmp() == ["fanout-run-x"]
