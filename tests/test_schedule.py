"""Every scheduler renders the same bytes; one master per task, rows in catalog order."""

from pathlib import Path

import pytest
from problem_images import scene

from engine import api


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    for i in range(4):
        scene(300 + 40 * i, 200).jpegsave(str(folder / f"m{i}.jpg"))
    return folder


def digests(result: api.RunResult) -> list[tuple[str, str, str]]:
    return [(r["master_id"], r["path"], r["sha256"]) for r in result.rows]


@pytest.mark.parametrize("scheduler", ["sync", "processes"])
def test_local_schedulers_match_threads(small_catalog, tmp_path, scheduler):
    threads = api.render(small_catalog, tmp_path / "threads", channels=["email", "instagram"])
    other = api.render(small_catalog, tmp_path / scheduler, channels=["email", "instagram"],
                       scheduler=scheduler, workers=2)
    assert digests(threads) == digests(other)
    assert [r["master_id"] for r in threads.rows] == sorted(r["master_id"] for r in threads.rows)


def test_distributed_cluster_matches_local(small_catalog, tmp_path):
    from distributed import LocalCluster

    local = api.render(small_catalog, tmp_path / "local", channels=["email"])
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        remote = api.render(small_catalog, tmp_path / "remote", channels=["email"],
                            scheduler=cluster.scheduler_address)
    assert digests(local) == digests(remote)


def test_progress_callback_counts_every_master(small_catalog, tmp_path):
    done: list[int] = []
    api.render(small_catalog, tmp_path / "out", channels=["email"], on_done=done.append)
    assert sum(done) == 4
