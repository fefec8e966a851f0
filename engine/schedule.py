"""Dask runs the masters: one task per master, locally by default or on a distributed cluster.

Only this module imports Dask. It never touches pixels: a task is job.render_master, and what
comes back is plain manifest rows (a pyvips image never crosses a task boundary).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import dask
from dask.callbacks import Callback

from .errors import ConfigError
from .job import JobSettings, render_master
from .plan import MasterPlan
from .spec.models import Preset

LOCAL_SCHEDULERS = ("threads", "processes", "sync")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _task(mp: MasterPlan, presets: dict[str, Preset], settings: JobSettings,
          vips_threads: int) -> list[dict]:
    from .image.decode import configure

    configure(vips_threads)
    return render_master(mp, presets, settings)


class _Progress(Callback):
    def __init__(self, on_done: Callable[[int], None], keys: set) -> None:
        super().__init__()
        self._on_done, self._keys = on_done, keys

    def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001 (dask's signature)
        if key in self._keys:
            self._on_done(1)


def run(
    plans: list[MasterPlan],
    presets: dict[str, Preset],
    settings: JobSettings,
    scheduler: str = "threads",
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[dict]:
    """Render every master; rows come back in catalog order.

    Local runs size themselves to the machine: `workers` tasks at once (default: one per core)
    and libvips threads per task so that workers x threads matches the cores.
    """
    n_cores = cores()
    workers = workers or n_cores
    if workers < 1:
        raise ConfigError(f"--workers: expected at least 1; found {workers}")
    vips_threads = max(1, n_cores // workers)
    progress = on_done or (lambda n: None)
    if "://" in scheduler:
        return _run_distributed(plans, presets, settings, scheduler, progress)
    if scheduler not in LOCAL_SCHEDULERS:
        raise ConfigError(
            f"--scheduler: expected one of {', '.join(LOCAL_SCHEDULERS)} or a dask.distributed "
            f"address like tcp://host:8786; found {scheduler!r}"
        )
    if scheduler == "sync":
        workers, vips_threads = 1, n_cores
    tasks = [
        dask.delayed(_task, pure=False, name=f"master-{i}")(mp, presets, settings, vips_threads)
        for i, mp in enumerate(plans)
    ]
    keys = {t.key for t in tasks}
    with _Progress(progress, keys):
        results = dask.compute(*tasks, scheduler=scheduler, num_workers=workers)
    return _flatten(results)


def _run_distributed(
    plans: list[MasterPlan],
    presets: dict[str, Preset],
    settings: JobSettings,
    address: str,
    progress: Callable[[int], None],
) -> list[dict]:
    from distributed import Client, as_completed

    with Client(address) as client:
        # A cluster's workers run one task per thread, sized to their own cores: one libvips
        # thread per task keeps workers x threads at the cores there too.
        futures = [
            client.submit(_task, mp, presets, settings, 1, pure=False)
            for mp in plans
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[list[dict]] = [[] for _ in futures]
        for future in as_completed(futures):
            results[index[future.key]] = future.result()
            progress(1)
            future.release()
    return _flatten(results)


def _flatten(results: Iterable[list[dict]]) -> list[dict]:
    return [row for rows in results for row in rows]
