"""Dask runs the masters: one task per master, locally by default or on a distributed cluster.

Only this module imports Dask. It never touches pixels: a task is job.render_master, and what
comes back is plain manifest rows (a pyvips image never crosses a task boundary).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Any

import dask
from dask.callbacks import Callback

from . import footprint
from .errors import ConfigError
from .image.decode import configure
from .job import JobSettings, fail_master, render_master
from .masters import human_bytes
from .plan import MasterPlan
from .rows import Row
from .spec.models import Preset

LOCAL_SCHEDULERS = ("threads", "processes", "sync")
# Masters handed to the local scheduler at once: enough to keep every worker busy (a slow
# master holds one worker while the others go on), few enough that rows stream out.
LOCAL_WINDOW = 64
# The memory masters may take at once (bytes; FANOUT_MEMORY, e.g. "12GiB"). Default: this share
# of what the machine has available when the run starts (the rest: the process, the OS, slack
# for estimates that come out low).
MEMORY_ENV = "FANOUT_MEMORY"
MEMORY_SHARE = 0.8
# The dask worker resource that carries memory: workers advertise theirs (`dask worker
# --resources MEMORY=6e9`) and each master's task asks for its estimated peak.
MEMORY_RESOURCE = "MEMORY"
# How long to look for a nanny's "restarted for memory" event after a worker died.
MEMORY_EVENT_WAIT_S = 3.0


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

    # It waits dask's distributed.comm.timeouts.connect (30 s unless configured, e.g. by
    # DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=10s).
    try:
        client = Client(scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect"))
    except OSError as exc:
        raise ConfigError(f"--scheduler: cannot reach {scheduler}: {exc}") from None
    with client:
        yield client


def _task(mp: MasterPlan, presets: dict[str, Preset], settings: JobSettings,
          vips_threads: int, gate: MemoryGate | None = None, need: int | None = None,
          ) -> list[Row]:
    """One master's rows. An exception never leaves the task: it becomes the master's failed
    rows here, in the worker, so that nothing unpicklable (an exception holding a lock, a
    file, a pyvips image) has to cross to the client, which would then wait on it or die.
    `need`: its estimated peak memory when the client has it already."""
    configure(vips_threads)
    try:
        if gate is None:
            return render_master(mp, presets, settings)
        with gate.hold(need if need is not None else master_footprint(mp, presets)):
            return render_master(mp, presets, settings)
    except Exception as exc:  # noqa: BLE001 (render_master returns rows; this is a bug's net)
        return fail_master(mp, settings, f"render crashed: {_describe(exc)}")


class _Opaque:
    """A task's arguments, which dask must not walk: dask.delayed looks for dask collections in
    every argument, into each dict, list and dataclass (a master's derivatives and previous
    rows, every preset, every rule: 20 ms a master, the bookkeeping benchmark measured); an
    object of a plain class it passes as it is."""

    __slots__ = ("args",)

    def __init__(self, args: tuple) -> None:
        self.args = args


def _unwrapped(opaque: _Opaque) -> list[Row]:
    return _task(*opaque.args)


def _describe(exc: BaseException) -> str:
    """'TypeName: message', even for an exception whose str() itself raises."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001
        text = "(its message cannot be shown)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def master_footprint(mp: MasterPlan, presets: dict[str, Preset]) -> int:
    """The estimated peak memory of one master's task (footprint.py), from its header, or
    from the size its previous rows recorded (nothing read)."""
    if mp.master.errors:
        return 0
    recipes = {d.recipe_hash: d for d in mp.derivatives if d.error is None and d.hls is None}
    if not recipes:
        return 0
    known = next(((r.source_width, r.source_height) for r in mp.previous.values()
                  if r.source_width and r.source_height), None)
    return footprint.estimate(mp.master.path, mp.master.kind,
                              [presets[d.preset] for d in recipes.values()],
                              [d.framing for d in recipes.values()], known)


def heaviest_first(chunk: list[MasterPlan], needs: list[int]) -> list[int]:
    """Each master's place in the order a window runs, 0 first: heaviest first (longest
    processing time first). Masters in catalog order leave the tail to chance: a heavy one
    started last holds one worker while the others have nothing left (27-35% of a 3-master
    benchmark's worker time). The work is estimated as the peak memory (its decoded size,
    mostly) times the distinct recipes made from it; no file is read for it beyond the header
    the memory estimate reads anyway."""
    work = [need * max(1, len(mp.recipes())) for mp, need in zip(chunk, needs, strict=True)]
    ranked = sorted(range(len(chunk)), key=lambda i: (-work[i], i))
    place = [0] * len(chunk)
    for order, i in enumerate(ranked):
        place[i] = order
    return place


def parse_bytes(text: str, what: str = MEMORY_ENV) -> int:
    """'12GiB', '8 GB', '500MiB', '3e9' -> bytes (dask's own parser); a ConfigError naming
    `what` for anything else, or a size under 1 MB."""
    from dask.utils import parse_bytes as dask_parse

    try:
        value = dask_parse(text)
    except (ValueError, TypeError):
        value = 0
    if value < 10**6:
        raise ConfigError(f"{what}: expected a size like 12GiB or 8000000000; found {text!r}")
    return int(value)


def memory_budget() -> int:
    """What a local run's masters may take at once: FANOUT_MEMORY, else MEMORY_SHARE of the
    memory available now."""
    if os.environ.get(MEMORY_ENV):
        return parse_bytes(os.environ[MEMORY_ENV])
    import psutil  # comes with distributed

    return int(psutil.virtual_memory().available * MEMORY_SHARE)


class MemoryGate:
    """Local runs: masters start, first come first served, only while the sum of their
    estimated peaks fits the budget. A master larger than the whole budget runs alone.

    The same rule as dask worker resources on a cluster; dask's local schedulers have none,
    so each task waits here, in its worker thread, for its turn."""

    def __init__(self, budget: int) -> None:
        self.budget = max(1, budget)
        self.used = 0
        self.peak = 0  # the most held at once: for tests and reports
        self.running = 0
        self.most_running = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, need: int) -> Iterator[None]:
        need = min(max(0, need), self.budget)
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            self._changed.wait_for(
                lambda: self._queue[0] is ticket and self.used + need <= self.budget)
            self._queue.popleft()
            self.used += need
            self.running += 1
            self.peak = max(self.peak, self.used)
            self.most_running = max(self.most_running, self.running)
            self._changed.notify_all()  # the next in line may fit too
        try:
            yield
        finally:
            with self._changed:
                self.used -= need
                self.running -= 1
                self._changed.notify_all()


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
    memory: int | None = None,
) -> list[Row]:
    """Render every master.

    Rows go to `on_rows` as masters finish (in catalog order locally), and only a bounded
    window of masters is in flight, so a huge catalog's results never sit in memory at once;
    without `on_rows`, every row is returned. `prepare(master)` runs just before a master is
    submitted (to attach what a previous run recorded for it), and the master's previous rows
    are dropped again once it is done.

    Local runs size themselves to the machine: `workers` tasks at once (default: one per core)
    and libvips threads per task so that workers x threads matches the cores, and never more
    masters at once than their estimated peaks fit in `memory` (default: memory_budget()). On
    a cluster, each task asks for its estimated peak as the workers' MEMORY resource.
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
    budget = memory if memory is not None else memory_budget() if workers > 1 else 0
    # Threads share one gate; processes cannot, so there a window runs only as many masters
    # at once as its largest one fits (conservative for a mixed window, exact for a uniform one).
    gate = MemoryGate(budget) if scheduler == "threads" and workers > 1 else None
    window = max(LOCAL_WINDOW, 16 * workers)
    for start in range(0, len(plans), window):
        chunk = plans[start:start + window]
        for mp in chunk:
            prepare(mp)
        # One estimate per master, in the client: the memory gate and the order both use it.
        # A header read each (none when the last run recorded the size), `workers` at once: on
        # an object store each is a round trip, which the workers would otherwise wait out.
        needs = [0] * len(chunk)
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                needs = list(pool.map(lambda mp: master_footprint(mp, presets), chunk))
        at_once = workers
        if scheduler == "processes" and workers > 1:
            at_once = max(1, min(workers, budget // max(1, max(needs))))
        # Dask's local scheduler starts independent tasks in descending key order (asserted
        # by tests/test_schedule.py): the key carries the place, so the heaviest goes first
        # (and the window's start, so that keys stay unique over a run).
        place = heaviest_first(chunk, needs)
        tasks = [
            dask.delayed(_unwrapped, pure=False)(
                _Opaque((mp, presets, settings, vips_threads, gate, needs[i] if gate else None)),
                dask_key_name=f"master-{start:09d}-{len(chunk) - place[i]:09d}")
            for i, mp in enumerate(chunk)
        ]
        keys = {t.key for t in tasks}
        with _Progress(progress, keys):
            results = dask.compute(*tasks, scheduler=scheduler, num_workers=at_once)
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
    goes on. A worker its nanny restarted for going over its memory limit says so in the
    failure.

    Memory: when the workers advertise a MEMORY resource, each task asks for its master's
    estimated peak (capped at the largest worker's, so that a huge master runs alone rather
    than never), and the scheduler runs on each worker only what fits.
    """
    from distributed import Future, as_completed, wait
    from distributed.scheduler import KilledWorker

    address = client.scheduler.address
    threads = sum(client.nthreads().values())
    on_info(f"cluster {address}: {len(client.nthreads())} workers, {threads} threads; "
            f"dashboard: {client.dashboard_link}")
    window = max(32, 4 * threads)
    memories = [w.get("resources", {}).get(MEMORY_RESOURCE)
                for w in client.scheduler_info()["workers"].values()]
    largest = max((m for m in memories if m), default=0)
    if not largest:
        on_info(f"the workers advertise no {MEMORY_RESOURCE} resource, so masters are not "
                f"placed by memory: start them with --resources {MEMORY_RESOURCE}=<bytes>, "
                "below their --memory-limit")
    needs: dict[int, int] = {}
    index: dict[str, int] = {}
    pending = iter(enumerate(plans))

    def submit(i: int, attempt: str = "") -> Future:
        # One libvips thread per task: the cluster's workers run one task per thread.
        prepare(plans[i])
        resources = None
        if largest:
            needs[i] = master_footprint(plans[i], presets)
            if needs[i]:
                resources = {MEMORY_RESOURCE: min(needs[i], largest)}
        return client.submit(_task, plans[i], presets, settings, 1, pure=False,
                             key=f"master-{settings.run_id}-{i}{attempt}", resources=resources)

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
        needs.pop(i, None)
        sink(rows)
        progress(1)

    def killed(future: Future) -> Any:
        """The KilledWorker a future failed with (its worker died), else None."""
        try:
            exc = future.exception() if future.status == "error" else None
        except Exception:  # noqa: BLE001 (an exception the client cannot even read)
            return None
        return exc if isinstance(exc, KilledWorker) else None

    suspects: list[int] = []
    queue = as_completed()
    for _ in range(window):
        submit_next(queue)
    for future in queue:
        i = index.pop(future.key)
        if killed(future) is not None:
            suspects.append(i)
            future.release()
        else:
            settle(i, future)
        submit_next(queue)
    for i in suspects:  # alone, one at a time
        since = time.time()
        future = submit(i, "-alone")
        wait([future])
        death = killed(future)
        if death is not None:
            future.release()
            finish(i, fail_master(plans[i], settings, _death_message(
                client, death, since, needs.get(i))))
        else:
            settle(i, future)


def _memory_restarts(client: Any, address: str | None, since: float) -> list[dict]:
    """The nannies' restarts for memory of the worker at `address`, or of any worker since
    `since` (a master alone is the only task running). The event is sent as the nanny kills
    its worker and may trail the scheduler's news of the death: a short, bounded look."""
    deadline = time.monotonic() + MEMORY_EVENT_WAIT_S
    while True:
        try:
            events = client.get_events("worker-restart-memory")
        except Exception:  # noqa: BLE001 (no event log: say what is known)
            return []
        found = [e for t, e in events if e.get("worker") == address or t >= since]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _death_message(client: Any, death: Any, since: float, need: int | None) -> str:
    """Why a master's workers kept dying: over their memory limit (its nanny restarted the
    worker and said why), or a crash."""
    last = getattr(death, "last_worker", None)
    over = _memory_restarts(client, getattr(last, "address", None), since)
    if not over:
        return ("a worker died every time it rendered this master, also alone (a crash "
                "in a decoder?); gave up after the scheduler's allowed failures")
    limit = getattr(last, "memory_limit", None)
    estimated = f"; estimated need {human_bytes(need)}" if need else ""
    return (f"out of memory: the worker went over its memory limit"
            f"{f' of {human_bytes(limit)}' if limit else ''} every time it rendered this "
            f"master, also alone (restarted by its nanny at {human_bytes(over[-1]['rss'])} "
            f"resident{estimated}); give workers more memory or lower --max-pixels")
