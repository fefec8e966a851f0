"""Every odd catalog row or master fails alone, with one line naming it, and nothing hangs:
FIFOs, sockets, devices, folders, symlink loops, unknown URL schemes, missing extras, huge
values, huge files, and a worker out of memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import load, read
from problem_images import scene

from engine import api, job, masters
from engine.catalog import load_catalog
from engine.cli import main
from engine.errors import ConfigError, MasterError
from engine.masters import check_master, hash_master, read_master, too_big, url_problem

FANOUT = Path(sys.executable).with_name("fanout")
VIDEO_HEAD = b"\x00\x00\x00\x20ftypisom" + b"\0" * 40  # sniffed as video; never decoded here


def jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scene(120, 80).jpegsave(str(path))
    return path


def rows_by_id(out: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for row in read(out).to_pylist():
        found.setdefault(row["master_id"], []).append(row)
    return found


def assert_rendered(out: Path, rows: list[dict]) -> None:
    """Every row ok, and every file decodes."""
    assert rows and all(r["status"] == "ok" for r in rows), rows
    for r in rows:
        assert load(out / r["path"]).avg() > 0


def assert_failed(rows: list[dict], path: str, problem: str) -> None:
    """Every row of the master failed with exactly `path: problem`, on one line."""
    assert rows and {r["status"] for r in rows} == {"failed"}
    assert {r["error"] for r in rows} == {f"{path}: {problem}"}, rows[0]["error"]
    assert "\n" not in rows[0]["error"]


@pytest.fixture
def no_s3fs(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if s3fs were not installed: fsspec's import of it fails."""
    registry = sys.modules["fsspec.registry"]._registry  # fsspec.registry is a read-only view
    monkeypatch.delitem(registry, "s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)


# --- masters.py on its own ---------------------------------------------------------------------

def test_local_masters_are_refused_from_stat_before_any_open(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    (tmp_path / "dir.jpg").mkdir()
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(masters.os, "open", lambda p, *a: opened.append(p) or real_open(p, *a))
    cases = {"pipe.jpg": "is a FIFO (named pipe), not a regular file",
             "loop.jpg": "symlink loop", "dir.jpg": "is a folder, not a file",
             "gone.jpg": "file not found"}
    for name, problem in cases.items():
        for call in (check_master, masters.open_master, read_master, hash_master):
            with pytest.raises(MasterError) as caught:
                call(str(tmp_path / name))
            assert str(caught.value) == problem
    for device in ("/dev/null", "/dev/zero"):
        with pytest.raises(MasterError, match="^is a character device, not a regular file$"):
            read_master(device)
    assert opened == []


def test_a_file_swapped_for_a_fifo_after_stat_is_refused_without_blocking(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe.jpg")
    monkeypatch.setattr(masters, "check_master", lambda path, max_bytes=None: 1)
    with pytest.raises(MasterError, match="^is a FIFO"):
        masters.open_master(str(tmp_path / "pipe.jpg"))


def test_permission_denied_is_one_line(tmp_path, monkeypatch):
    master = jpeg(tmp_path / "a.jpg")

    real_open = os.open

    def denied(path, *args):  # noqa: ANN001, ANN002, ANN202 (tests run as root: chmod is moot)
        if path == str(master):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args)

    monkeypatch.setattr(masters.os, "open", denied)
    with pytest.raises(MasterError, match="^cannot read: Permission denied$"):
        read_master(str(master))


def test_size_limit_is_checked_before_reading(tmp_path, monkeypatch):
    master = jpeg(tmp_path / "a.jpg")
    size = master.stat().st_size
    monkeypatch.setattr(masters, "open_master", lambda path: pytest.fail("opened"))
    with pytest.raises(MasterError) as caught:
        read_master(str(master), max_bytes=100)
    assert str(caught.value) == too_big(size, 100) == (
        f"is {masters.human_bytes(size)}, over the limit of 100 bytes (--max-master-bytes)")
    with pytest.raises(MasterError, match="over the limit"):
        hash_master(str(master), max_bytes=100)
    assert too_big(int(3.2 * 2**30), masters.DEFAULT_MAX_MASTER_BYTES) == (
        "is 3.2 GiB, over the limit of 2.0 GiB (--max-master-bytes)")
    assert too_big(2**31 + 1, 2**31) == (  # rounding would hide the difference
        "is 2147483649 bytes, over the limit of 2147483648 bytes (--max-master-bytes)")


def test_reads_and_hashes_within_the_limit(tmp_path):
    master = jpeg(tmp_path / "a.jpg")
    data = master.read_bytes()
    assert read_master(str(master), max_bytes=len(data)) == data
    digest, size = hash_master(str(master), max_bytes=len(data))
    assert size == len(data) and len(digest) == 64
    assert read_master(f"file://{master}") == data


def test_a_master_that_grew_after_stat_is_read_whole_within_the_limit(tmp_path, monkeypatch):
    master = jpeg(tmp_path / "a.jpg")
    data = master.read_bytes()
    monkeypatch.setattr(masters, "check_master", lambda path, max_bytes=None: 10)
    assert read_master(str(master), max_bytes=len(data)) == data
    with pytest.raises(MasterError, match="over the limit"):
        read_master(str(master), max_bytes=len(data) - 1)


def test_out_of_memory_while_reading_is_the_masters_error(tmp_path, monkeypatch):
    master = jpeg(tmp_path / "a.jpg")

    class Hungry:
        def read(self, n: int = -1) -> bytes:
            raise MemoryError

        def __enter__(self) -> Hungry:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(masters, "open_master", lambda path: Hungry())
    size = master.stat().st_size
    with pytest.raises(MasterError, match=rf"^out of memory reading \({size} bytes\)$"):
        read_master(str(master))


def test_url_problems_tell_unknown_schemes_from_missing_libraries(no_s3fs):
    assert url_problem("foo://x/y.jpg") == "unknown URL scheme 'foo'"
    assert url_problem("s3://b/x.jpg") == "s3:// needs the s3 extra: pip install 'fanout[s3]'"
    assert url_problem("gs://b/x.jpg") == "gs:// needs the gcsfs package: pip install gcsfs"
    assert url_problem("simplecache::foo://x") == "unknown URL scheme 'foo'"
    assert url_problem("memory://x/y.jpg") is None
    with pytest.raises(MasterError, match="^unknown URL scheme 'foo'$"):
        read_master("foo://x/y.jpg")


# --- the catalog ---------------------------------------------------------------------------------

def test_folder_lists_odd_entries_as_failing_masters(tmp_path, monkeypatch):
    root = tmp_path / "m"
    jpeg(root / "ok.jpg")
    os.mkfifo(root / "pipe.jpg")
    os.symlink("loop.jpg", root / "loop.jpg")
    os.symlink("nowhere.jpg", root / "dangling.jpg")
    jpeg(tmp_path / "elsewhere" / "x.jpg")
    os.symlink(tmp_path / "elsewhere", root / "linked")  # a symlinked folder is not entered
    (root / ".hidden").mkdir()
    os.mkfifo(root / ".hidden" / "pipe.jpg")
    monkeypatch.chdir(root)  # an AF_UNIX name is limited to 108 bytes: bind a short one
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("sock.png")
        found = {m.id: m for m in load_catalog(root)}
    assert set(found) == {"ok", "pipe", "loop", "dangling", "sock"}
    assert found["ok"].error is None and found["ok"].kind == "image"
    assert found["pipe"].error == "is a FIFO (named pipe), not a regular file"
    assert found["loop"].error == "symlink loop"
    assert found["dangling"].error == "file not found"
    assert found["sock"].error == "is a socket, not a regular file"


def test_ids_must_match_whole(tmp_path):
    jpeg(tmp_path / "a.jpg")
    (tmp_path / "list.csv").write_text('id,path\n"abc\n",a.jpg\nok,a.jpg\n')
    found = {m.id: m for m in load_catalog(tmp_path / "list.csv")}
    assert found["abc\n"].error == (
        "row 2: invalid id 'abc\\n': expected [A-Za-z0-9][A-Za-z0-9._/-]*")
    assert found["ok"].error is None


def test_only_an_empty_cell_is_missing(tmp_path):
    jpeg(tmp_path / "a.jpg")
    (tmp_path / "list.csv").write_text("id,path,product\nnull,a.jpg,NA\nnan,a.jpg,\n")
    found = {m.id: m for m in load_catalog(tmp_path / "list.csv")}
    assert (found["null"].product, found["nan"].product) == ("NA", "nan")


def test_positions_are_capped(tmp_path):
    jpeg(tmp_path / "a.jpg")
    (tmp_path / "list.csv").write_text(
        f"id,path,position\nbig,a.jpg,{2**40}\nneg,a.jpg,-1\nmax,a.jpg,1000000\n")
    found = {m.id: m for m in load_catalog(tmp_path / "list.csv")}
    assert found["big"].error == (
        f"row 2: invalid position {2**40}: expected a whole number 0..1000000")
    assert "invalid position -1" in found["neg"].error
    assert found["max"].position == 1_000_000 and found["max"].error is None
    (tmp_path / "text.csv").write_text("id,path,position\nt,a.jpg,x\nu,a.jpg,\u0661\nv,a.jpg,7\n")
    found = {m.id: m for m in load_catalog(tmp_path / "text.csv")}
    assert found["t"].error == "row 2: invalid position 'x': expected a whole number 0..1000000"
    assert "invalid position '\u0661'" in found["u"].error  # int() would take an Arabic digit
    assert found["v"].position == 7


def test_odd_value_types_never_crash_the_listing(tmp_path):
    jpeg(tmp_path / "a.jpg")
    table = pa.table({
        "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
        "path": ["a.jpg"] * 5,
        "product": pa.array([7.0, float("nan"), 1.5, None, float("inf")]),
        "position": pa.array([float("nan"), 2.0, 0.0, 1e30, None]),
        "role": pa.array([None, float("nan"), 3.0, None, None], pa.float64()),
    })
    pq.write_table(table, tmp_path / "list.parquet")
    found = {m.id: m for m in load_catalog(tmp_path / "list.parquet")}
    assert (found["1"].product, found["1"].position, found["1"].role, found["1"].error) == (
        "7", 0, "product", None)
    assert (found["2"].product, found["2"].position, found["2"].error) == ("2", 2, None)
    assert found["3"].error == (
        "row 2: invalid product 1.5: expected text; "
        "row 2: invalid role '3': expected one of product, editorial")
    assert found["4"].error == "row 3: invalid position 1e+30: expected a whole number 0..1000000"
    assert found["5"].error == "row 4: invalid product inf: expected text"


def test_a_row_that_breaks_the_builder_fails_alone(tmp_path, monkeypatch):
    from engine import catalog

    jpeg(tmp_path / "a.jpg")
    (tmp_path / "list.csv").write_text("id,path\nok,a.jpg\nboom,a.jpg\n")
    real = catalog._text

    def fragile(value: object, what: str) -> tuple[str | None, str | None]:
        if value == "boom":
            raise RuntimeError("surprise")
        return real(value, what)

    monkeypatch.setattr(catalog, "_text", fragile)
    found = {m.id: m for m in load_catalog(tmp_path / "list.csv")}
    assert found["ok"].error is None
    assert found["boom"].error == "row 3: cannot read this row: RuntimeError: surprise"


@pytest.mark.parametrize(("header", "problem"), [
    ("id,path,id", "catalog listing has column 'id' twice"),
    ("id,path,postion", "`postion` looks like a misspelling of `position`; rename the column "
                        "(unknown columns are otherwise kept as extra data)"),
    ("id,pth", "`pth` looks like a misspelling of `path`; rename the column "
               "(unknown columns are otherwise kept as extra data)"),
])
def test_listing_columns_that_would_lose_data_are_refused(tmp_path, header, problem):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{header}\n" + ",".join("a" * len(header.split(","))) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_catalog(listing)
    assert str(caught.value) == f"{listing}: {problem}"


def test_unknown_and_known_extra_columns_are_kept_out_of_the_way(tmp_path):
    jpeg(tmp_path / "a.jpg")
    (tmp_path / "list.csv").write_text("id,path,alt,title,tags,price,sku\na,a.jpg,x,y,z,9,S\n")
    (master,) = load_catalog(tmp_path / "list.csv")
    assert master.error is None


def test_listing_itself_on_an_odd_path_is_a_config_error(tmp_path, no_s3fs):
    with pytest.raises(ConfigError, match="^foo://x/list.csv: unknown URL scheme 'foo'$"):
        load_catalog("foo://x/list.csv")
    with pytest.raises(ConfigError, match=r"needs the s3 extra: pip install 'fanout\[s3\]'$"):
        load_catalog("s3://b/list.csv")
    os.mkfifo(tmp_path / "list.csv")
    with pytest.raises(ConfigError, match="cannot read catalog listing: is a FIFO"):
        load_catalog(tmp_path / "list.csv")
    result = CliRunner().invoke(main, ["render", str(tmp_path / "list.csv"), "--out",
                                       str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2 and "is a FIFO" in result.output


# --- whole runs ----------------------------------------------------------------------------------

def test_a_folder_with_a_fifo_and_a_loop_renders_the_rest(tmp_path):
    root = tmp_path / "masters"
    jpeg(root / "ok.jpg")
    jpeg(root / "shoes" / "red.jpg")
    os.mkfifo(root / "pipe.jpg")
    os.symlink("loop.jpg", root / "loop.jpg")
    out = tmp_path / "out"
    result = api.render(root, out, channels=["email"])
    assert result.exit_code == 1
    found = rows_by_id(out)
    assert_rendered(out, found["ok"] + found["shoes/red"])
    assert_failed(found["pipe"], str(root / "pipe.jpg"),
                  "is a FIFO (named pipe), not a regular file")
    assert_failed(found["loop"], str(root / "loop.jpg"), "symlink loop")


def test_a_listing_of_odd_rows_renders_the_rest(tmp_path, no_s3fs):
    jpeg(tmp_path / "a.jpg")
    (tmp_path / "folder").mkdir()
    listing = tmp_path / "list.csv"
    listing.write_text(
        "id,path,position\n"
        "ok,a.jpg,0\n"
        "dir,folder,0\n"
        "devzero,/dev/zero,0\n"
        "devnull,/dev/null,0\n"
        "foo,foo://x/y.jpg,0\n"
        "s3,s3://b/x.jpg,0\n"
        f"far,a.jpg,{2**40}\n"
        '"abc\n",a.jpg,0\n'
        "ok2,a.jpg,1\n"
    )
    out = tmp_path / "out"
    result = api.render(listing, out, channels=["email"])
    assert result.exit_code == 1
    found = rows_by_id(out)
    assert_rendered(out, found["ok"] + found["ok2"])
    assert_failed(found["dir"], str(tmp_path / "folder"), "is a folder, not a file")
    for name in ("zero", "null"):
        assert_failed(found[f"dev{name}"], f"/dev/{name}",
                      "is a character device, not a regular file")
    assert_failed(found["foo"], "foo://x/y.jpg", "unknown URL scheme 'foo'")
    assert_failed(found["s3"], "s3://b/x.jpg",
                  "s3:// needs the s3 extra: pip install 'fanout[s3]'")
    assert_failed(found["far"], str(tmp_path / "a.jpg"),
                  f"row 8: invalid position {2**40}: expected a whole number 0..1000000")
    assert {r["error"] for r in found["abc\n"]} == {
        f"{tmp_path / 'a.jpg'}: row 9: invalid id 'abc\\n': expected "
        "[A-Za-z0-9][A-Za-z0-9._/-]*"}


def plan_of(folder: Path) -> tuple[dict[str, job.MasterPlan], dict]:
    the_plan = api.plan(folder, ["email"])
    return {mp.master.id: mp for mp in the_plan.masters}, the_plan.presets


def settings(out: Path, **options: int) -> job.JobSettings:
    return job.JobSettings(out=str(out), run_id="t", max_pixels=10**8, **options)


def test_masters_over_the_byte_limit_fail_before_reading(tmp_path):
    root = tmp_path / "masters"
    small = jpeg(root / "small.jpg")
    scene(1200, 900).jpegsave(str(root / "big.jpg"), Q=95)
    (root / "clip.mp4").write_bytes(VIDEO_HEAD + b"\0" * 200_000)
    limit = small.stat().st_size + 10
    plans, presets = plan_of(root)
    assert plans["clip"].master.kind == "video" and plans["clip"].derivatives
    run = settings(tmp_path / "out", max_master_bytes=limit)
    assert_rendered(tmp_path / "out", job.render_master(plans["small"], presets, run))
    for name, path in (("big", root / "big.jpg"), ("clip", root / "clip.mp4")):
        size = path.stat().st_size
        assert_failed(job.render_master(plans[name], presets, run), str(path),
                      f"is {masters.human_bytes(size)}, over the limit of "
                      f"{masters.human_bytes(limit)} (--max-master-bytes)")


def test_a_run_with_max_master_bytes_fails_only_the_big_master(tmp_path):
    root = tmp_path / "masters"
    small = jpeg(root / "small.jpg")
    big = root / "big.jpg"
    scene(1200, 900).jpegsave(str(big), Q=95)
    limit = small.stat().st_size + 10
    out = tmp_path / "out"
    result = api.render(root, out, channels=["email"], max_master_bytes=limit)
    assert result.exit_code == 1
    found = rows_by_id(out)
    assert_rendered(out, found["small"])
    assert_failed(found["big"], str(big), masters.too_big(big.stat().st_size, limit))


def test_out_of_memory_decoding_fails_that_master(tmp_path, monkeypatch):
    root = tmp_path / "masters"
    master = jpeg(root / "a.jpg")
    plans, presets = plan_of(root)

    def hungry(*args: object) -> None:
        raise MemoryError

    monkeypatch.setattr(job, "render_all", hungry)
    assert_failed(job.render_master(plans["a"], presets, settings(tmp_path / "out")),
                  str(master), f"out of memory decoding ({master.stat().st_size} bytes)")


def test_a_real_fanout_run_with_a_fifo_and_an_unknown_scheme_finishes(tmp_path):
    jpeg(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    listing = tmp_path / "list.csv"
    listing.write_text("id,path\nok,a.jpg\npipe,pipe.jpg\nfoo,foo://x/y.jpg\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [str(FANOUT), "render", str(listing), "--out", str(out), "--channel", "email",
         "--no-progress"], capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    found = rows_by_id(out)
    assert_rendered(out, found["ok"])
    assert_failed(found["pipe"], str(tmp_path / "pipe.jpg"),
                  "is a FIFO (named pipe), not a regular file")
    assert_failed(found["foo"], "foo://x/y.jpg", "unknown URL scheme 'foo'")
