"""Scale out on real components, all on loopback: a dask scheduler with two worker processes,
and an S3-compatible server (moto). Catalog and outputs in S3; workers killed mid-run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import problem_images as P
import pytest
from helpers import assert_consistent, read

from engine import api

pytestmark = pytest.mark.slow  # a loopback dask cluster and a moto S3 server

pytest.importorskip("moto.server", reason="pip install '.[test]'")
pytest.importorskip("s3fs", reason="pip install '.[test]'")
fsspec = pytest.importorskip("fsspec")

TESTS = Path(__file__).parent
VOLATILE = {"run_id", "render_ms", "decode_ms"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 60, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def s3() -> str:
    """A moto S3 server process on 127.0.0.1; the AWS variables point every process at it."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                             "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="test",
                      AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, what="the S3 server")
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("fanout-test")
    yield "s3://fanout-test"
    server.terminate()
    server.wait(timeout=20)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def cluster(s3: str):
    """`dask scheduler` and two `dask worker` processes (with nannies) on loopback."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(TESTS.parent),
               DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="1")
    bin_dir = Path(sys.executable).parent
    procs = [subprocess.Popen(
        [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    for _ in range(2):
        procs.append(subprocess.Popen(
            [str(bin_dir / "dask"), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
             # a task past the limit would pause or restart its worker and fail its master
             "--memory-limit", "1GiB",
             "--no-dashboard", "--preload", str(TESTS / "cluster_preload.py")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(2, timeout=60)
    yield address
    for group in (procs[1:], procs[:1]):  # workers first, so none waits on a gone scheduler
        for proc in group:
            proc.terminate()
        for proc in group:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def comparable(rows: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows),
                  key=lambda r: (r["master_id"], r["channel"] or "", r["output"] or ""))


def test_s3_catalog_to_s3_outputs_on_the_cluster_matches_a_local_run(s3, cluster, tmp_path):
    fs = fsspec.filesystem("s3")
    lines = ["id,path,product,position,role"]
    for i in range(4):
        fs.pipe_file(f"{s3[5:]}/catalog/m{i}.jpg", P.scene(320 + 40 * i, 240).jpegsave_buffer())
        lines.append(f"m{i},m{i}.jpg,SKU{i},0,product")
    fs.pipe_file(f"{s3[5:]}/catalog/list.csv", ("\n".join(lines) + "\n").encode())

    remote = api.render(f"{s3}/catalog/list.csv", f"{s3}/out-cluster", channels=["email", "web"],
                        scheduler=cluster)
    from click.testing import CliRunner

    from engine.cli import main

    local = CliRunner().invoke(main, ["render", f"{s3}/catalog/list.csv", "--out",
                                      f"{s3}/out-local", "--channel", "email", "--channel",
                                      "web", "--no-progress"])
    assert remote.exit_code == local.exit_code == 0, local.output
    cluster_rows = read(f"{s3}/out-cluster").to_pylist()
    assert comparable(cluster_rows) == comparable(read(f"{s3}/out-local").to_pylist())
    planned = api.plan(f"{s3}/catalog/list.csv", ["email", "web"]).derivative_count
    assert planned > 4 * 10 and len(cluster_rows) == planned
    for row in cluster_rows:
        data = fs.cat_file(f"{s3[5:]}/out-cluster/{row['path']}")
        assert len(data) == row["bytes"]
        assert data == fs.cat_file(f"{s3[5:]}/out-local/{row['path']}")
    assert not fs.exists(f"{s3[5:]}/out-cluster/.fanout.lock"), "the lock object is released"
    # a folder of masters in S3 works too, and a rerun there skips everything
    again = api.render(f"{s3}/catalog/list.csv", f"{s3}/out-cluster", channels=["email", "web"],
                       scheduler=cluster)
    assert {r["status"] for r in again.rows} == {"skipped"}
    by_folder = api.plan(f"{s3}/catalog/", ["email"])
    assert sorted(mp.master.id for mp in by_folder.masters) == ["list", "m0", "m1", "m2", "m3"]


def test_a_killed_worker_does_not_stop_the_run(cluster, tmp_path):
    from distributed import Client

    masters = tmp_path / "masters"
    masters.mkdir()
    for i in range(10):
        P.scene(900 + 20 * i, 600).jpegsave(str(masters / f"m{i}.jpg"))
    out = tmp_path / "out"
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=api.render(
        masters, out, channels=["mobile", "email"], scheduler=cluster)))
    runner.start()
    wait_for(lambda: out.exists() and sum(1 for _ in out.rglob("*.*")) >= 4, what="first files")
    with Client(cluster) as client:
        pids = client.run(os.getpid)
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    runner.join(timeout=300)
    result = outcome["result"]
    assert result.exit_code == 0, [r["error"] for r in result.failed]
    keys = [(r["master_id"], r["output"]) for r in result.rows]
    assert len(keys) == len(set(keys)) == 10 * 17, "every output exactly once"
    assert_consistent(out)


def test_a_master_that_kills_its_worker_every_time_fails_alone(cluster, tmp_path):
    masters = tmp_path / "masters"
    masters.mkdir()
    for name in ("good-1", "crash-me", "good-2"):
        P.scene().jpegsave(str(masters / f"{name}.jpg"))
    result = api.render(masters, tmp_path / "out", channels=["email"], scheduler=cluster)
    assert result.exit_code == 1
    failed = {r["master_id"] for r in result.failed}
    assert failed == {"crash-me"}
    assert all("worker died" in r["error"] for r in result.failed)
    assert sum(r["status"] == "ok" for r in result.rows) == 4
