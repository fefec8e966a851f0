"""Every scheduler renders the same bytes; one master per task, rows in catalog order; masters
run at once only as far as their estimated memory fits; a task's exception is a failed row."""

import threading
from pathlib import Path

import pytest
from cluster_preload import Unpicklable
from helpers import load
from problem_images import scene

from engine import api, schedule


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    for i in range(4):
        scene(300 + 40 * i, 200).jpegsave(str(folder / f"m{i}.jpg"))
    return folder


def digests(result: api.RunResult) -> list[tuple[str, str, str]]:
    return [(r["master_id"], r["path"], r["sha256"]) for r in result.rows]


@pytest.fixture(scope="module")
def threads_run(small_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> api.RunResult:
    return api.render(small_catalog, tmp_path_factory.mktemp("threads") / "out",
                      channels=["email"])  # 8 searched derivatives: enough to differ


@pytest.mark.parametrize("scheduler", ["sync", "processes"])
def test_local_schedulers_match_threads(small_catalog, threads_run, tmp_path, scheduler):
    threads = threads_run
    other = api.render(small_catalog, tmp_path / scheduler, channels=["email"],
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


def test_memory_gate_runs_together_what_fits_and_alone_what_does_not():
    gate = schedule.MemoryGate(1000)
    both_in = threading.Barrier(2, timeout=30)  # passes only if both hold the gate at once

    def small() -> None:
        with gate.hold(400):
            both_in.wait()

    threads = [threading.Thread(target=small) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not both_in.broken and gate.most_running == 2 and gate.peak == 800 and gate.used == 0
    # a master larger than the whole budget still runs (alone), and never beside another
    with gate.hold(5000):
        assert gate.used == 1000
    assert gate.peak == 1000 and gate.used == 0


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """render_master wrapped to record the most masters rendering at once: [now, most]."""
    real, lock, count = schedule.render_master, threading.Lock(), [0, 0]

    def counting(mp, presets, settings):  # noqa: ANN001, ANN202
        with lock:
            count[0] += 1
            count[1] = max(count[1], count[0])
        try:
            return real(mp, presets, settings)
        finally:
            with lock:
                count[0] -= 1

    monkeypatch.setattr(schedule, "render_master", counting)
    return count


@pytest.mark.slow  # renders the catalog two or three times
def test_local_threads_start_masters_only_as_their_memory_fits(small_catalog, tmp_path,
                                                               monkeypatch):
    free = api.render(small_catalog, tmp_path / "free", channels=["email"], workers=4)
    count = _counting(monkeypatch)
    # each master estimated at 600 MiB: in a 1 GiB budget, one at a time on 4 workers
    monkeypatch.setattr(schedule, "master_footprint", lambda mp, presets: 600 * 2**20)
    monkeypatch.setenv(schedule.MEMORY_ENV, "1GiB")
    gated = api.render(small_catalog, tmp_path / "gated", channels=["email"], workers=4)
    assert gated.exit_code == 0 and count[1] == 1
    assert digests(gated) == digests(free)
    for row in gated.rows:
        image = load(tmp_path / "gated" / row["path"])
        assert (image.width, image.height) == (row["width"], row["height"])


def test_memory_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv(schedule.MEMORY_ENV, "1.5GiB")
    assert schedule.memory_budget() == int(1.5 * 2**30)
    monkeypatch.setenv(schedule.MEMORY_ENV, "8000000000")
    assert schedule.memory_budget() == 8 * 10**9
    monkeypatch.setenv(schedule.MEMORY_ENV, "lots")
    with pytest.raises(api.ConfigError, match="FANOUT_MEMORY: expected a size"):
        schedule.memory_budget()
    monkeypatch.delenv(schedule.MEMORY_ENV)
    assert 0 < schedule.memory_budget()


@pytest.mark.slow  # renders the catalog two or three times
def test_an_exception_that_cannot_be_pickled_or_printed_is_a_failed_row(small_catalog, tmp_path,
                                                                         monkeypatch):
    """A bug in a task (here: an exception holding a lock, whose str() raises too) fails its
    master alone; before, it escaped dask.compute and took the whole run down."""
    real = schedule.render_master

    def buggy(mp, presets, settings):  # noqa: ANN001, ANN202
        if mp.master.id == "m1":
            raise Unpicklable("cannot travel", 1)
        return real(mp, presets, settings)

    monkeypatch.setattr(schedule, "render_master", buggy)
    for scheduler in ("threads", "sync"):
        result = api.render(small_catalog, tmp_path / scheduler, channels=["email"],
                            scheduler=scheduler, workers=2)
        assert result.exit_code == 1
        assert {r["master_id"] for r in result.failed} == {"m1"}
        assert all("render crashed: Unpicklable: (its message cannot be shown)" in r["error"]
                   for r in result.failed)
        assert sum(r["status"] == "ok" for r in result.rows) == 3 * 2


def test_the_heaviest_masters_start_first_and_rows_stay_in_catalog_order(
        small_catalog, threads_run, tmp_path, monkeypatch):
    """Longest first: a heavy master started last would hold one worker while the others have
    nothing left. With two workers, masters start in the order of their estimated work (here
    set: m1, m2, m3, m0), two at a time, and the manifest keeps the catalog's order."""
    started: list[str] = []
    real = schedule.render_master

    def recording(mp, presets, settings):
        started.append(mp.master.id)
        return real(mp, presets, settings)

    work = {"m0": 1, "m1": 5, "m2": 3, "m3": 2}
    monkeypatch.setattr(schedule, "render_master", recording)
    monkeypatch.setattr(schedule, "master_footprint",
                        lambda mp, presets: work[mp.master.id] * 2**20)
    result = api.render(small_catalog, tmp_path / "out", channels=["email"], workers=2)
    assert result.exit_code == 0
    # The two workers take m1 and m2 first, then m3 and m0 (which of a pair calls in first is
    # a race between the two threads); in the catalog's order m0 and m1 would go first.
    assert sorted(started[:2]) == ["m1", "m2"] and sorted(started[2:]) == ["m0", "m3"]
    assert digests(result) == digests(threads_run)


def test_the_work_estimate_orders_by_size_times_recipes_and_keeps_ties_in_order():
    """Estimated work = memory estimate x distinct recipes; equal work keeps catalog order
    (one worker, where no estimate is made, is all ties: the catalog's order)."""
    from engine.catalog import Master
    from engine.plan import Derivative, MasterPlan

    def plan(name: str, recipes: int) -> MasterPlan:
        return MasterPlan(Master(id=name, path=f"/m/{name}.jpg", product=name), [
            Derivative(channel="c", output=f"o{i}", preset="p", format="jpeg",
                       path=f"c/{name}/o{i}.jpg", recipe_hash=f"h{i}")
            for i in range(recipes)])

    chunk = [plan("a", 1), plan("b", 4), plan("c", 2), plan("d", 1)]
    assert schedule.heaviest_first(chunk, [100, 100, 150, 100]) == [2, 0, 1, 3]
    assert schedule.heaviest_first(chunk, [0, 0, 0, 0]) == [0, 1, 2, 3]
