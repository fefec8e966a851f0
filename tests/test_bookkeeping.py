"""Bookkeeping at catalog scale (issue #18): change tokens instead of reading every master, the
racy rule, --verify, and the bookkeeping benchmark itself."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import problem_images as P
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import assert_consistent, load, read

from engine import api, history, masters
from engine.cli import main
from engine.errors import ConfigError
from engine.masters import COARSE_NS, FINE_NS, change_token, is_racy

CHANNELS = ["email"]
YESTERDAY_NS = time.time_ns() - 86_400 * 10**9


def write_master(path: Path, flip: bool = False) -> None:
    """An uncompressed TIFF: the same size whatever the pixels, as a same-size edit needs."""
    image = P.scene(320, 240)
    (image.flipver() if flip else image).tiffsave(str(path), compression="none")


def backdate(folder: Path) -> None:
    """Masters written long before the run (not "racy": see masters.is_racy)."""
    for path in folder.iterdir():
        os.utime(path, ns=(YESTERDAY_NS, YESTERDAY_NS))


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Bytes read from masters, by path: every local master is opened through _open_local."""
    reads: dict[str, int] = {}
    real = masters._open_local

    class Counting:
        def __init__(self, path: str) -> None:
            self.path, self.fh = path, real(path)

        def read(self, *args: int) -> bytes:
            data = self.fh.read(*args)
            reads[self.path] = reads.get(self.path, 0) + len(data)
            return data

        def __getattr__(self, name: str) -> object:
            return getattr(self.fh, name)

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

    monkeypatch.setattr(masters, "_open_local", Counting)
    return reads


def three_masters(folder: Path) -> Path:
    """a, b (b flipped) and c, as TIFFs written long before the run."""
    folder.mkdir()
    for name in ("a", "b", "c"):
        write_master(folder / f"{name}.tif", flip=name == "b")
    backdate(folder)
    return folder


@pytest.fixture()
def night(tmp_path: Path) -> tuple[Path, Path]:
    folder = three_masters(tmp_path / "masters")
    out = tmp_path / "out"
    first = api.render(folder, out, channels=CHANNELS)
    assert first.exit_code == 0 and {r.status for r in first.rows} == {"ok"}
    return folder, out


def statuses(result: api.RunResult) -> dict[tuple[str, str | None], str]:
    return {(r.master_id, r.output): r.status for r in result.rows}


def test_rows_record_each_masters_change_token(night):
    folder, out = night
    table = read(out)
    for row in table.to_pylist():
        st = os.stat(folder / f"{row['master_id']}.tif")
        assert (row["master_size"], row["master_mtime_ns"], row["master_ctime_ns"],
                row["master_inode"]) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    # The manifest stays plain Parquet: the new columns read back with pyarrow alone.
    assert pq.read_schema(out / "manifest.parquet").field("master_inode").type == pa.int64()


def test_a_no_change_rerun_reads_no_master_bytes(night, counted):
    folder, out = night
    before = {(r["master_id"], r["output"]): r for r in read(out).to_pylist()}
    again = api.render(folder, out, channels=CHANNELS)
    assert counted == {}  # neither sniffed nor hashed: stat-ed only
    assert again.exit_code == 0 and again.rows
    assert {r.status for r in again.rows} == {"skipped"}
    for row in again.rows:
        prev = before[(row.master_id, row.output)]
        assert (row.sha256, row.bytes, row.path, row.master_sha256) == (
            prev["sha256"], prev["bytes"], prev["path"], prev["master_sha256"])
        assert row.run_id == again.run_id != prev["run_id"]
    assert again.skipped == len(again.rows)
    assert_consistent(out)
    # ... and the night after, too (the rows it recorded carry the tokens on)
    assert {r.status for r in api.render(folder, out, channels=CHANNELS).rows} == {"skipped"}
    assert counted == {}


def test_touching_a_master_rehashes_it_and_renders_nothing(night, counted):
    folder, out = night
    touched = folder / "a.tif"
    os.utime(touched, ns=(YESTERDAY_NS + 10**9, YESTERDAY_NS + 10**9))
    again = api.render(folder, out, channels=CHANNELS)
    assert set(counted) == {str(touched)}
    assert counted[str(touched)] >= touched.stat().st_size  # hashed whole
    assert {r.status for r in again.rows} == {"skipped"}
    new_mtime = {r["master_mtime_ns"] for r in read(out).to_pylist() if r["master_id"] == "a"}
    assert new_mtime == {touched.stat().st_mtime_ns}  # the new token is recorded
    counted.clear()
    api.render(folder, out, channels=CHANNELS)
    assert counted == {}


def test_same_size_content_with_a_forged_mtime_is_caught_by_ctime(night, counted):
    folder, out = night
    target = folder / "c.tif"
    size = target.stat().st_size
    write_master(target, flip=True)  # other pixels, same byte count
    os.utime(target, ns=(YESTERDAY_NS, YESTERDAY_NS))  # the mtime forged back
    assert target.stat().st_size == size
    again = api.render(folder, out, channels=CHANNELS)
    assert set(counted) == {str(target)}
    got = statuses(again)
    assert {k for k, v in got.items() if v == "ok"} == {k for k in got if k[0] == "c"}
    assert all(v == "skipped" for k, v in got.items() if k[0] != "c")
    flipped = next(r for r in again.rows if r.master_id == "c" and r.output == "w600")
    original = next(r for r in again.rows if r.master_id == "a" and r.output == "w600")
    # c was a's twin; now it holds b's flipped pixels, and its new output is b's, byte for byte
    twin = next(r for r in again.rows if r.master_id == "b" and r.output == "w600")
    assert flipped.sha256 != original.sha256 and flipped.sha256 == twin.sha256
    assert load(out / flipped.path).width == load(out / twin.path).width
    assert_consistent(out)


def test_verify_hashes_every_master_and_catches_what_a_trusted_token_hides(night, counted):
    """A file system whose stat cannot be trusted (here: a token forged in the manifest to
    match the edited file) hides a change from a plain run; --verify reads every master."""
    folder, out = night
    target = folder / "a.tif"
    write_master(target, flip=True)
    os.utime(target, ns=(YESTERDAY_NS, YESTERDAY_NS))  # not racy: only the token can tell
    st = target.stat()
    table = read(out)
    mine = pa.compute.equal(table.column("master_id"), "a")
    for name, value in (("master_mtime_ns", st.st_mtime_ns), ("master_ctime_ns", st.st_ctime_ns),
                        ("master_inode", st.st_ino), ("master_size", st.st_size)):
        column = pa.compute.if_else(mine, pa.scalar(value, pa.int64()), table.column(name))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    meta = pq.read_schema(out / "manifest.parquet").metadata  # the run and its start
    pq.write_table(table.replace_schema_metadata(meta), out / "manifest.parquet")

    trusted = api.render(folder, out, channels=CHANNELS)
    assert counted == {} and {r.status for r in trusted.rows} == {"skipped"}

    result = CliRunner().invoke(main, ["render", str(folder), "--out", str(out), "--channel",
                                       "email", "--verify", "--json"])
    assert result.exit_code == 0, result.output
    assert set(counted) == {str(folder / f"{n}.tif") for n in "abc"}  # every master read
    rows = {(r["master_id"], r["output"]): r["status"] for r in read(out).to_pylist()}
    assert {k for k, v in rows.items() if v == "ok"} == {k for k in rows if k[0] == "a"}
    assert_consistent(out)


def test_verify_from_the_environment(night, counted):
    folder, out = night
    result = CliRunner().invoke(main, ["render", str(folder), "--out", str(out), "--channel",
                                       "email"], env={"FANOUT_VERIFY": "1"})
    assert result.exit_code == 0, result.output
    assert set(counted) == {str(folder / f"{n}.tif") for n in "abc"}


def test_a_racy_master_is_hashed_although_its_token_is_unchanged(tmp_path, counted):
    folder = tmp_path / "masters"
    folder.mkdir()
    write_master(folder / "a.tif")
    write_master(folder / "b.tif")
    backdate(folder)
    soon = time.time_ns() + 5 * 10**9  # stamped after the first run started: racy for it
    os.utime(folder / "b.tif", ns=(soon, soon))
    out = tmp_path / "out"
    api.render(folder, out, channels=CHANNELS)
    counted.clear()
    again = api.render(folder, out, channels=CHANNELS)
    assert set(counted) == {str(folder / "b.tif")}
    assert {r.status for r in again.rows} == {"skipped"}


def test_the_racy_rule():
    token = (10, 5 * 10**9 + 123, 0, 1, None)
    assert is_racy(token, None)  # no start recorded: never trusted
    assert not is_racy(token, token[1] + FINE_NS + 1)
    assert is_racy(token, token[1] + FINE_NS - 1)
    whole = (10, 5 * 10**9, 0, 1, None)  # a coarse file system's whole seconds
    assert is_racy(whole, whole[1] + COARSE_NS - 1)
    assert not is_racy(whole, whole[1] + COARSE_NS + 1)
    assert not is_racy((10, None, None, None, "ETag:abc"), None)  # a store's version token


def test_change_token_of_local_and_odd_paths(tmp_path):
    path = tmp_path / "m.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"x" * 10)
    st = path.stat()
    assert change_token(str(path)) == (13, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, None)
    assert change_token(str(tmp_path)) is None  # a folder: hashed, and fails with its reason
    assert change_token(str(tmp_path / "missing.jpg")) is None
    os.mkfifo(tmp_path / "fifo")
    assert change_token(str(tmp_path / "fifo")) is None  # stat-ed, never opened


def test_served_files_in_an_object_store_are_checked_by_listing_their_folders(monkeypatch):
    """The size check of each served file (outputs_stand) asks an object store for one listing
    per folder, not one HEAD per file; its answers are the per-file ones."""
    import uuid

    import fsspec

    from engine.store import Store

    root = f"memory://sizes-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    files = {f"web/m{i}/o{j}.jpg": b"x" * (10 * i + j + 1) for i in range(3) for j in range(4)}
    for name, data in files.items():
        fs.pipe(f"{root}/{name}", data)
    fs.mkdir(f"{root}/web/m0/o9.jpg")  # a folder where a file is recorded: not a file
    store = Store(root)
    paths = [*files, "web/m1/gone.jpg", "web/none/o0.jpg", "web/m0/o9.jpg"]
    calls = {"ls": 0, "size": 0}
    real_ls = type(store.fs).ls

    def ls(self, path, detail=True, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls["ls"] += 1
        return real_ls(self, path, detail=detail, **kwargs)

    real_size = type(store.fs).size

    def size(self, path):  # noqa: ANN001, ANN202
        calls["size"] += 1
        return real_size(self, path)

    monkeypatch.setattr(type(store.fs), "ls", ls)
    monkeypatch.setattr(type(store.fs), "size", size)
    assert store.sizes(paths) == [len(d) for d in files.values()] + [None, None, None]
    # a listing of m0, m1 and m2; the one file asked of a folder (it is missing) by itself
    assert calls == {"ls": 3, "size": 1}
    rows = pa.table({"path": ["web/m0/o1.jpg", None, "web/m2/o3.jpg", "web/m1/o0.jpg"],
                     "bytes": pa.array([2, None, 24, 999], pa.int64())})
    assert history.outputs_stand(store, rows).to_pylist() == [True, True, True, False]
    # a flat folder far larger than what is asked of it is listed once, then asked by file
    for i in range(1100):
        fs.pipe(f"{root}/amazon/SKU{i}.MAIN.jpg", b"y" * (i % 7 + 1))
    calls.update(ls=0, size=0)
    asked = ["amazon/SKU5.MAIN.jpg", "amazon/SKU6.MAIN.jpg"]
    assert store.sizes(asked) == [6, 7] and calls == {"ls": 1, "size": 0}
    assert store.sizes(asked) == [6, 7] and calls == {"ls": 1, "size": 2}


def test_a_new_output_renders_only_itself_and_reads_its_master(night, counted, tmp_path):
    folder, out = night
    cfg = tmp_path / "cfg" / "presets"
    cfg.mkdir(parents=True)
    (cfg / "email.toml").write_text(  # one preset edited: its recipe hash changes
        '[email-600]\nresize = { width = 600, fit = "fit" }\nformat = "jpeg"\nquality = 70\n'
        "max_bytes = 60000\n")
    again = api.render(folder, out, channels=CHANNELS, config_dir=tmp_path / "cfg")
    got = statuses(again)
    assert {k for k, v in got.items() if v == "ok"} == {(m, "w600") for m in "abc"}
    assert set(counted) == {str(folder / f"{n}.tif") for n in "abc"}
    assert_consistent(out)


@pytest.mark.slow
def test_the_bookkeeping_benchmark_runs_and_reports(tmp_path, monkeypatch):
    """A small N through the benchmark's three nights, with real output files, and its
    readers (diff, the CSV export, the report); its last line is the JSON summary."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bookkeeping", "--masters", "200", "--outputs"],
        capture_output=True, text=True, timeout=600, check=True,
        cwd=Path(__file__).resolve().parents[1])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["masters"] == 200 and summary["stopped"] is None
    assert summary["master_bytes_read_no_change"] == 0
    assert summary["history_bytes_no_change"] > 0
    for key in ("client_peak_rss_mb", "no_change_s", "changed_1pct_s", "left_1pct_s",
                "diff_s", "export_csv_s", "report_s", "diff_peak_rss_mb"):
        assert summary[key] > 0
    assert summary["output_files"] is True


# -- history that grows with what changed ------------------------------------------------------

def history_file(out: Path, run_id: str) -> pa.Table:
    return pq.read_table(out / "_runs" / f"{run_id}.parquet")


def test_a_no_change_night_writes_a_run_record_and_no_rows(night):
    folder, out = night
    first_rows = history_file(out, api.diff(out).newer).num_rows
    again = api.render(folder, out, channels=CHANNELS)
    record = history_file(out, again.run_id)
    assert record.num_rows == 0 and first_rows == len(again.rows) > 0
    meta = record.schema.metadata
    assert meta[b"fanout.history"] == b"delta" and json.loads(meta[b"fanout.channels"]) == ["email"]
    assert int(meta[b"fanout.unchanged"]) == len(again.rows)  # every row, recorded skipped
    change = api.diff(out)
    assert change.newer == again.run_id
    assert change.unchanged == len(again.rows)
    assert not (change.added or change.rerendered or change.removed or change.failed)


def _rows_by_key(table: pa.Table) -> dict[tuple, dict]:
    return {(r["master_id"], r["channel"], r["output"]): r for r in table.to_pylist()}


def test_diff_and_recover_across_several_nights_of_deltas(night, tmp_path, monkeypatch):
    folder, out = night
    runs = [api.diff(out).newer]
    runs.append(api.render(folder, out, channels=CHANNELS).run_id)  # nothing changed
    write_master(folder / "a.tif", flip=True)  # a changes, c leaves
    (folder / "c.tif").unlink()
    third = api.render(folder, out, channels=CHANNELS, allow_removals=True)
    runs.append(third.run_id)
    runs.append(api.render(folder, out, channels=["email", "instagram"]).run_id)  # one added
    runs.append(api.render(folder, out, channels=CHANNELS).run_id)  # instagram carried

    third_rows = third.rows  # rebuilt from the history (a later run committed since)
    # diff reads each run's history file and looks the rendered keys up in the ones before:
    # it never rebuilds a whole manifest from the history (a million masters' rows)
    monkeypatch.setattr(history, "_replayed", lambda *a, **k: pytest.fail("replayed"))
    change = api.diff(out, older=runs[1], newer=runs[2])
    assert {r.master_id for r in change.rerendered} == {"a"} and not change.added
    assert {r.master_id for r in change.removed} == {"c"}
    assert change.unchanged == len([r for r in third_rows if r.master_id == "b"])
    early = api.diff(out, older=runs[0], newer=runs[1])
    assert not (early.added or early.rerendered or early.removed or early.failed)
    assert early.unchanged == history_file(out, runs[0]).num_rows
    added = api.diff(out, older=runs[2], newer=runs[3])
    assert {r.channel for r in added.added} == {"instagram"} and not added.rerendered
    assert added.unchanged == len(third_rows)
    # every run's rows, rebuilt from the deltas, are what the manifest said after it
    latest = api.diff(out)
    assert latest.unchanged == sum(r["channel"] == "email" for r in read(out).to_pylist())
    monkeypatch.undo()
    # histories written before the unchanged count: the same answers, found the long way
    every = [_diff_facts(api.diff(out, older=a, newer=b)) for a, b in zip(runs, runs[1:])]
    for run in runs:
        path = out / "_runs" / f"{run}.parquet"
        table = pq.read_table(path)
        meta = {k: v for k, v in table.schema.metadata.items() if k != b"fanout.unchanged"}
        pq.write_table(table.replace_schema_metadata(meta), path)
    assert [_diff_facts(api.diff(out, older=a, newer=b)) for a, b in zip(runs, runs[1:])] == every

    manifest_rows = _rows_by_key(read(out))
    (out / "manifest.parquet").write_bytes(b"")  # lost
    rows, last = api.recover(out)
    assert last == runs[-1] and rows == len(manifest_rows)
    assert _rows_by_key(read(out)) == manifest_rows  # every column, every status and run id
    assert_consistent(out)


def test_diff_calls_a_file_served_before_rerendered_whichever_run_served_it(night):
    """A run that rendered other channels leaves a channel's files served: a later re-render
    of them is `rerendered` against it, not `added`. --from must be earlier than --to."""
    folder, out = night
    first = api.diff(out).newer
    other = api.render(folder, out, channels=["instagram"]).run_id  # email left as it was
    again = api.render(folder, out, channels=CHANNELS, force=True)
    change = api.diff(out)
    assert change.older == other and not change.added
    assert len(change.rerendered) == sum(r.status == "ok" for r in again.rows) > 0
    assert {r.channel for r in change.rerendered} == set(CHANNELS)
    assert [r.path for r in change.rerendered][:1] == [again.rows[0].path]  # the rows' paths
    with pytest.raises(ConfigError, match="is not earlier than"):
        api.diff(out, older=again.run_id, newer=first)


def test_diff_names_a_history_file_it_cannot_read(night):
    folder, out = night
    write_master(folder / "a.tif", flip=True)  # a re-rendered: its keys are looked up
    api.render(folder, out, channels=CHANNELS)
    first = out / "_runs" / f"{api.diff(out).older}.parquet"
    first.write_bytes(b"not parquet")
    result = CliRunner().invoke(main, ["diff", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(first) in lines[0] and "cannot read" in lines[0]


def _diff_facts(change: history.RunDiff) -> dict:
    groups = ("added", "rerendered", "removed", "failed")
    return {"unchanged": change.unchanged,
            **{g: sorted(r.key for r in getattr(change, g)) for g in groups}}


def test_diff_reads_the_deltas_when_the_manifest_is_corrupt(night):
    folder, out = night
    api.render(folder, out, channels=CHANNELS)  # a no-change night: a run record only
    (out / "manifest.parquet").write_bytes(b"PAR1 garbage")
    change = api.diff(out)
    assert change.unchanged == history_file(out, change.older).num_rows > 0
    assert not (change.added or change.rerendered or change.removed or change.failed)


# -- quiet masters: not planned, not submitted, not held (engine/quiet.py) -----------------------

@pytest.fixture()
def spied(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """What each run planned and submitted: the masters handed to the planner, and to Dask."""
    from engine import schedule

    seen: dict[str, list] = {"planned": [], "submitted": []}
    real_plan, real_run = api.build_plan, schedule.run

    def planned(masters_, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen["planned"].append(sorted(m.id for m in masters_))
        return real_plan(masters_, *args, **kwargs)

    def submitted(plans, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen["submitted"].append(sorted(mp.master.id for mp in plans))
        return real_run(plans, *args, **kwargs)

    monkeypatch.setattr(api, "build_plan", planned)
    monkeypatch.setattr(schedule, "run", submitted)
    return seen


def test_a_no_change_night_plans_and_submits_nothing(night, spied, counted):
    folder, out = night
    before = read(out).to_pylist()
    assert all(r["plan_digest"] for r in before)  # every standing row records its digest
    for _ in range(2):  # and the night after, from the rows the quiet night restamped
        again = api.render(folder, out, channels=CHANNELS)
        assert spied["planned"][-1] == [] and spied["submitted"][-1] == []
        assert counted == {}
        after = read(out).to_pylist()
        assert [r["master_id"] for r in after] == [r["master_id"] for r in before]
        assert {r["status"] for r in after} == {"skipped"}
        assert {r["run_id"] for r in after} == {again.run_id}
        for old, new in zip(before, after, strict=True):
            same = ("path", "sha256", "bytes", "width", "height", "plan_digest", "master_mtime_ns")
            assert [old[c] for c in same] == [new[c] for c in same]
        assert again.skipped == len(before) and again.exit_code == 0
        assert history_file(out, again.run_id).num_rows == 0  # a run record, no rows
    assert_consistent(out)


def write_listing(path: Path, folder: Path, rows: list[tuple[str, str]]) -> None:
    """A CSV listing of (id, title), each master in `folder` as <id>.tif."""
    lines = ["id,path,product,title"] + [f"{i},{folder / f'{i}.tif'},P{i},{t}" for i, t in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def listed(tmp_path: Path) -> tuple[Path, Path, Path]:
    folder = three_masters(tmp_path / "masters")
    listing = tmp_path / "catalog.csv"
    write_listing(listing, folder, [("a", "A"), ("b", "B"), ("c", "C")])
    out = tmp_path / "out"
    assert api.render(listing, out, channels=CHANNELS).exit_code == 0
    return listing, folder, out


def test_a_listing_edit_plans_that_master_alone_and_restates_its_rows(listed, spied, counted):
    listing, folder, out = listed
    write_listing(listing, folder, [("a", "A"), ("b", "B renamed"), ("c", "C")])
    again = api.render(listing, out, channels=CHANNELS)
    assert spied["planned"][-1] == ["b"]
    assert set(counted) == {str(listing)}  # the listing read, no master: b's token is the same
    rows = read(out).to_pylist()
    assert {r["status"] for r in rows} == {"skipped"}
    assert {r["title"] for r in rows if r["master_id"] == "b"} == {"B renamed"}
    assert {r["master_id"] for r in history_file(out, again.run_id).to_pylist()} == {"b"}
    api.render(listing, out, channels=CHANNELS)
    assert spied["planned"][-1] == []  # restated with its new digest: quiet again


def test_a_reordered_listing_reorders_the_manifest(listed, spied):
    listing, folder, out = listed
    write_listing(listing, folder, [("c", "C"), ("a", "A"), ("b", "B")])
    api.render(listing, out, channels=CHANNELS)
    assert spied["planned"][-1] == []
    ids = [r["master_id"] for r in read(out).to_pylist()]
    assert list(dict.fromkeys(ids)) == ["c", "a", "b"]  # catalog order: the gallery's order


def test_an_edited_channel_makes_no_master_quiet(listed, spied, tmp_path):
    listing, _, out = listed
    cfg = tmp_path / "cfg" / "presets"
    cfg.mkdir(parents=True)
    (cfg / "email.toml").write_text(
        '[email-600]\nresize = { width = 600, fit = "fit" }\nformat = "jpeg"\nquality = 70\n'
        "max_bytes = 60000\n")
    again = api.render(listing, out, channels=CHANNELS, config_dir=tmp_path / "cfg")
    assert spied["planned"][-1] == ["a", "b", "c"]
    assert {k for k, v in statuses(again).items() if v == "ok"} == {(m, "w600") for m in "abc"}


def test_a_new_master_cannot_take_a_quiet_masters_file(tmp_path, spied):
    """Two masters named to one file: the one already serving it keeps it, untouched."""
    folder = tmp_path / "masters"
    folder.mkdir()
    for name in ("a", "b"):
        write_master(folder / f"{name}.tif", flip=name == "b")
    backdate(folder)
    cfg = tmp_path / "cfg"
    (cfg / "channels").mkdir(parents=True)
    (cfg / "presets").mkdir()
    (cfg / "presets" / "one.toml").write_text(
        '[one-200]\nresize = { width = 200, fit = "fit" }\nformat = "jpeg"\nquality = 80\n')
    (cfg / "channels" / "one.toml").write_text(
        'name = "one"\n[[outputs]]\nname = "main"\npreset = "one-200"\npath = "{product}.{ext}"\n')
    listing = tmp_path / "catalog.csv"
    listing.write_text(f"id,path,product\na,{folder / 'a.tif'},P\n")
    assert api.render(listing, tmp_path / "out", channels=["one"], config_dir=cfg).exit_code == 0
    served = (tmp_path / "out" / "one" / "P.jpg").read_bytes()
    listing.write_text(f"id,path,product\na,{folder / 'a.tif'},P\nb,{folder / 'b.tif'},P\n")
    again = api.render(listing, tmp_path / "out", channels=["one"], config_dir=cfg)
    assert spied["planned"][-1] == ["b"]
    assert again.exit_code != 0
    assert [f.master_id for f in again.failed] == ["b"]
    assert "claimed by several derivatives" in (again.failed[0].error or "")
    assert (tmp_path / "out" / "one" / "P.jpg").read_bytes() == served
    assert statuses(again)[("a", "main")] == "skipped"


def test_tonights_rows_merge_into_the_earlier_ones_by_catalog_place():
    from engine.quiet import _merged

    def table(ks: list[int]) -> pa.Table:
        return pa.table({"k": pa.array(ks, pa.int64())})

    earlier = [(table([0, 0, 2]), np.array([0, 0, 2])), (table([2, -1, 5]), np.array([2, -1, 5]))]
    tonight = [1, 3, 4, 6]
    got = pa.concat_tables(_merged(iter(earlier), table(tonight), np.array(tonight), True))
    assert got.column("k").to_pylist() == [0, 0, 1, 2, 2, -1, 3, 4, 5, 6]
    unordered = [(table([3, 0]), np.array([3, 0]))]
    got = pa.concat_tables(_merged(iter(unordered), table([1, 2]), np.array([1, 2]), False))
    assert got.column("k").to_pylist() == [0, 1, 2, 3]


def test_a_killed_runs_temporary_beside_a_quiet_masters_file_is_swept(night, spied):
    """A run killed while it overwrote a file leaves a temporary beside it; its journal names
    the file, so the next night looks there, although that master is quiet tonight."""
    from engine import manifest
    from engine.store import Store

    folder, out = night
    served = next(r["path"] for r in read(out).to_pylist() if r["master_id"] == "a")
    manifest.write_journal(Store(out), "20260101T000000000000Z-dead00", [served], [])
    temporary = (out / served).parent / f".{Path(served).name}.0123456789ab.tmp"
    temporary.write_bytes(b"half a file")
    again = api.render(folder, out, channels=CHANNELS)
    assert spied["planned"][-1] == [] and {r.status for r in again.rows} == {"skipped"}
    assert not temporary.exists() and (out / served).exists()
    assert not list((out / "_runs").glob("*.journal.parquet"))
    assert_consistent(out)


def test_check_and_exports_turn_only_the_rows_they_need_into_python(night, monkeypatch):
    """A manifest with 20,000 more rows that are not served: check converts only served rows,
    and an export of one channel only that channel's."""
    from engine import manifest

    folder, out = night
    table = read(out)
    meta = pq.read_schema(out / "manifest.parquet").metadata
    n = 20_000
    others = {c: pa.nulls(n, table.schema.field(c).type) for c in table.column_names}
    others.update(master_id=pa.array([f"x{i}" for i in range(n)]),
                  channel=pa.array(["other"] * n), output=pa.array(["o"] * n),
                  status=pa.array(["failed"] * n), run_id=table.column("run_id")[0:1].take(
                      pa.array([0] * n)).combine_chunks())
    grown = pa.concat_tables([table, pa.table(others, schema=table.schema)])
    pq.write_table(grown.replace_schema_metadata(meta), out / "manifest.parquet")
    sizes: list[int] = []
    real = manifest.from_table
    monkeypatch.setattr(manifest, "from_table", lambda t: sizes.append(t.num_rows) or real(t))
    result = api.check(out)
    assert result.checked == table.num_rows and not result.problems
    assert sizes and max(sizes) <= table.num_rows
    sizes.clear()
    _, rows = api._published_rows(out, ["email"])
    assert len(rows) == table.num_rows and sizes == [table.num_rows]


def test_the_sweep_never_reaches_through_a_link_or_past_fanouts_own_names(night, tmp_path):
    """A journal naming a path behind a symlinked folder: the temporary-looking file out there
    stays; beside a real folder's file only fanout's own temporary name goes, a look-alike
    foreign file stays."""
    from engine import manifest
    from engine.store import Store

    folder, out = night
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = elsewhere / ".x.jpg.0123456789ab.tmp"
    outside.write_bytes(b"not fanout's")
    (out / "linked").symlink_to(elsewhere)
    served = next(r["path"] for r in read(out).to_pylist() if r["master_id"] == "a")
    manifest.write_journal(Store(out), "20260101T000000000000Z-dead01",
                           ["linked/x.jpg", served], [])
    own = (out / served).parent / f".{Path(served).name}.0123456789ab.tmp"
    own.write_bytes(b"half a file")
    foreign = (out / served).parent / f".{Path(served).name}.tmp"  # not fanout's pattern
    foreign.write_bytes(b"someone's")
    assert api.render(folder, out, channels=CHANNELS).exit_code == 0
    assert outside.read_bytes() == b"not fanout's" and foreign.exists() and not own.exists()
    assert (out / served).exists()
