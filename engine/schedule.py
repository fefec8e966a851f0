"""Dask runs the masters: one task per master, locally by default or on a distributed cluster.

Only this module imports Dask. It never touches pixels: a task is job.render_master, and what
comes back is plain manifest rows (a pyvips image never crosses a task boundary).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import dask
from dask.callbacks import Callback

from .errors import ConfigError
from .image.decode import configure
from .job import JobSettings, fail_master, render_master
from .plan import MasterPlan
from .rows import Row
from .spec.models import Preset

LOCAL_SCHEDULERS = ("threads", "processes", "sync")
# Masters handed to the local scheduler at once: enough to keep every worker busy (a slow
# master holds one worker while the others go on), few enough that rows stream out.
LOCAL_WINDOW = 64


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_scheduler(scheduler: str) -> None:
    if "://" not in scheduler and scheduler not in LOCAL_SCHEDULERS:
        raise ConfigError(
            f"--scheduler: expected one of {', '.join(LOCAL_SCHEDULERS)} or a dask.distributed "
            f"address like tcp://host:8786; found {scheduler!r}"
        )


@contextmanager
def connect(scheduler: str) -> Iterator[Any]:
    """A dask.distributed Client for an address (None for a local scheduler), opened before
    anything is written, so that an unreachable scheduler leaves no OUT behind."""
    check_scheduler(scheduler)
    if "://" not in scheduler:
        yield None
        return
    from distributed import Client

    try:
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise ConfigError(f"--scheduler: cannot reach {scheduler}: {exc}") from None
    with client:
        yield client


def _task(mp: MasterPlan, presets: dict[str, Preset], settings: JobSettings,
          vips_threads: int) -> list[Row]:
    configure(vips_threads)
    return render_master(mp, presets, settings)


class _Progress(Callback):
    def __init__(self, on_done: Callable[[int], None], keys: set) -> None:
        super().__init__()
        self._on_done, self._keys = on_done, keys

    def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001 (dask's signature)
        if key in self._keys:
            self._on_done(1)


def _no_prepare(mp: MasterPlan) -> None:
    return None


def run(
    plans: list[MasterPlan],
    presets: dict[str, Preset],
    settings: JobSettings,
    scheduler: str = "threads",
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
    on_info: Callable[[str], None] | None = None,
    on_rows: Callable[[list[Row]], None] | None = None,
    prepare: Callable[[MasterPlan], None] | None = None,
    client: Any = None,
) -> list[Row]:
    """Render every master.

    Rows go to `on_rows` as masters finish (in catalog order locally), and only a bounded
    window of masters is in flight, so a huge catalog's results never sit in memory at once;
    without `on_rows`, every row is returned. `prepare(master)` runs just before a master is
    submitted (to attach what a previous run recorded for it), and the master's previous rows
    are dropped again once it is done.

    Local runs size themselves to the machine: `workers` tasks at once (default: one per core)
    and libvips threads per task so that workers x threads matches the cores.
    """
    collected: list[Row] = []
    sink = on_rows or collected.extend
    prepare = prepare or _no_prepare
    n_cores = cores()
    workers = workers or n_cores
    vips_threads = max(1, n_cores // workers)
    progress = on_done or (lambda n: None)
    if "://" in scheduler:
        with nullcontext(client) if client is not None else connect(scheduler) as session:
            _run_distributed(plans, presets, settings, session, progress,
                             on_info or (lambda message: None), sink, prepare)
        return collected
    check_scheduler(scheduler)
    if scheduler == "sync":
        workers, vips_threads = 1, n_cores
    window = max(LOCAL_WINDOW, 16 * workers)
    for start in range(0, len(plans), window):
        chunk = plans[start:start + window]
        for mp in chunk:
            prepare(mp)
        tasks = [
            dask.delayed(_task, pure=False, name=f"master-{start + i}")(
                mp, presets, settings, vips_threads)
            for i, mp in enumerate(chunk)
        ]
        keys = {t.key for t in tasks}
        with _Progress(progress, keys):
            results = dask.compute(*tasks, scheduler=scheduler, num_workers=workers)
        for mp, rows in zip(chunk, results, strict=True):
            mp.previous = {}
            sink(rows)
    return collected


def _run_distributed(
    plans: list[MasterPlan],
    presets: dict[str, Preset],
    settings: JobSettings,
    client: Any,
    progress: Callable[[int], None],
    on_info: Callable[[str], None],
    sink: Callable[[list[Row]], None],
    prepare: Callable[[MasterPlan], None],
) -> None:
    """Submit masters to a dask.distributed cluster, a bounded window at a time.

    Only plain rows come back, and at most `window` tasks are in flight, so neither the client
    nor the scheduler holds a whole large catalog's tasks at once. A master whose worker dies
    is retried by the scheduler; after `distributed.scheduler.allowed-failures` deaths it is a
    suspect. Innocent masters that merely shared a dying worker become suspects too, so each
    suspect gets one more try alone, where only its own crash can stop it: one that kills its
    worker again (a decoder that crashes on it every time) is recorded `failed`, and the run
    goes on.
    """
    from distributed import Future, as_completed, wait
    from distributed.scheduler import KilledWorker

    address = client.scheduler.address
    threads = sum(client.nthreads().values())
    on_info(f"cluster {address}: {len(client.nthreads())} workers, {threads} threads; "
            f"dashboard: {client.dashboard_link}")
    window = max(32, 4 * threads)
    index: dict[str, int] = {}
    pending = iter(enumerate(plans))

    def submit(i: int, attempt: str = "") -> Future:
        # One libvips thread per task: the cluster's workers run one task per thread.
        prepare(plans[i])
        return client.submit(_task, plans[i], presets, settings, 1, pure=False,
                             key=f"master-{settings.run_id}-{i}{attempt}")

    def submit_next(queue: as_completed) -> None:
        for i, _ in pending:
            future = submit(i)
            index[future.key] = i
            queue.add(future)
            return

    def settle(i: int, future: Future) -> None:
        try:
            rows = future.result()
        except Exception as exc:  # noqa: BLE001 (one master's fault never stops the run)
            rows = fail_master(plans[i], settings, f"render crashed: {exc!r}")
        future.release()
        finish(i, rows)

    def finish(i: int, rows: list[Row]) -> None:
        plans[i].previous = {}
        sink(rows)
        progress(1)

    suspects: list[int] = []
    queue = as_completed()
    for _ in range(window):
        submit_next(queue)
    for future in queue:
        i = index.pop(future.key)
        if future.status == "error" and isinstance(future.exception(), KilledWorker):
            suspects.append(i)
            future.release()
        else:
            settle(i, future)
        submit_next(queue)
    for i in suspects:  # alone, one at a time
        future = submit(i, "-alone")
        wait([future])
        if future.status == "error" and isinstance(future.exception(), KilledWorker):
            future.release()
            finish(i, fail_master(
                plans[i], settings,
                "a worker died every time it rendered this master, also alone (a crash "
                "in a decoder?); gave up after the scheduler's allowed failures",
            ))
        else:
            settle(i, future)
