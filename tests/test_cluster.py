"""Scale out on real components, all on loopback: a dask scheduler with two worker processes,
and an S3-compatible server (moto). Catalog and outputs in S3; workers killed mid-run; a
master over a worker's memory limit; an exception that cannot travel; memory-aware placement
of video masters."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import problem_images as P
import pytest
from helpers import assert_consistent, read
from helpers import load as read_image

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


def test_a_master_over_the_worker_memory_limit_fails_alone_naming_memory(cluster, tmp_path):
    """hog-me takes memory until its worker's nanny restarts the worker (1 GiB limit): retried,
    then alone, then failed with an error that says memory; the others render."""
    masters = tmp_path / "masters"
    masters.mkdir()
    for name in ("good-1", "hog-me", "good-2"):
        P.scene().jpegsave(str(masters / f"{name}.jpg"))
    out = tmp_path / "out"
    result = api.render(masters, out, channels=["email"], scheduler=cluster)
    assert result.exit_code == 1
    assert {r["master_id"] for r in result.failed} == {"hog-me"}
    for row in result.failed:
        assert "out of memory" in row["error"] and "memory limit of 1.0 GiB" in row["error"]
    ok = [r for r in result.rows if r["status"] == "ok"]
    assert {r["master_id"] for r in ok} == {"good-1", "good-2"} and len(ok) == 4
    for row in ok:
        image = read_image(out / row["path"])
        assert (image.width, image.height) == (row["width"], row["height"])
    assert_consistent(out)


def test_an_exception_that_cannot_be_pickled_never_leaves_the_client_waiting(cluster, tmp_path):
    masters = tmp_path / "masters"
    masters.mkdir()
    for name in ("good-1", "unpicklable-me"):
        P.scene().jpegsave(str(masters / f"{name}.jpg"))
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=api.render(
        masters, tmp_path / "out", channels=["email"], scheduler=cluster)), daemon=True)
    runner.start()
    runner.join(timeout=120)
    assert not runner.is_alive(), "the client still waits on the task"
    result = outcome["result"]
    assert result.exit_code == 1
    assert {r["master_id"] for r in result.failed} == {"unpicklable-me"}
    assert all("render crashed: Unpicklable: (its message cannot be shown)" in r["error"]
               for r in result.failed)
    assert sum(r["status"] == "ok" for r in result.rows) == 2


def test_video_masters_on_two_workers_stay_under_their_memory_limit(tmp_path):
    """Four 960x540 clips for amazon (a 1920x1080 H.264 encode and a poster each) on two
    workers of two threads, 1 GiB each, advertising MEMORY=600 MB: each master asks for its
    estimate (about 470 MB), so each worker renders one at a time although it has two threads
    (two at once, with the worker's own ~250 MB, would pass its limit). Every worker stays
    under its limit, none is restarted, every master renders."""
    from distributed import Client, LocalCluster

    from engine.demo import product_video

    masters = tmp_path / "masters"
    masters.mkdir()
    for i in range(4):
        product_video(masters / f"clip-{i}.mp4", 960, 540, seconds=2.0, noise=2)
    limit = 2**30
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, memory_limit=limit,
                      resources={"MEMORY": 600e6}, dashboard_address=":0") as local, \
            Client(local) as client:
        pids = client.run(os.getpid)
        result = api.render(masters, tmp_path / "out", channels=["amazon"],
                            scheduler=local.scheduler_address)
        peaks = client.run(_peak_rss)
        assert client.run(os.getpid) == pids, "a worker was restarted"
        assert not client.get_events("worker-restart-memory")
    assert result.exit_code == 0, [r["error"] for r in result.failed]
    videos = [r for r in result.rows if r["format"] == "mp4"]
    assert len(videos) == 4 and all((r["width"], r["height"]) == (1920, 1080) for r in videos)
    for row in videos:
        with av.open(str(tmp_path / "out" / row["path"])) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (1920, 1080)
    print("peak RSS per worker (MiB):", {k: round(v / 2**20) for k, v in peaks.items()},
          "limit", limit // 2**20)
    assert len(peaks) == 2 and all(peak < limit for peak in peaks.values()), peaks


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
