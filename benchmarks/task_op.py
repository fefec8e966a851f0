"""sharp's task for one of the Python contenders, in a process of its own, as sharp's runs in a
node process of its own:

    python -m benchmarks.task_op {engine,naive-pyvips} MASTER COUNT WORKERS [--keep FILE]

runs COUNT operations (MASTER to 720x588, Lanczos 3, JPEG quality 80) on WORKERS threads with
WORKERS x libvips threads = cores, and prints {"ops_per_s", "cpu_ms_per_op", "bytes"} as one
JSON line (CPU: user + system time of the process over the operations; bytes: one output's;
--keep writes that output).

A process of its own for each measurement: in the benchmark's own process, fanout's operation
ran 2-5% slower after naive pyvips' thumbnail operations had run there (this 2-core VM,
2026-11-29, 300 operations on 2 threads: 48.9-50.6 operations/s against 52.7-53.6 in a fresh
process, in alternation), a handicap sharp's fresh node process never had.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyvips

TASK_OUT = (720, 588)


def ops_per_s(op, count: int, workers: int) -> tuple[float, float]:  # noqa: ANN001
    """(operations per second, CPU milliseconds an operation: user + system time of every
    thread of this process, or of the child processes `op` waited for)."""
    cpu = _cpu_s()
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: op(), range(count)))
    seconds = time.perf_counter() - start
    return count / seconds, 1000 * (_cpu_s() - cpu) / count


def _cpu_s() -> float:
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("contender", choices=["engine", "naive-pyvips"])
    parser.add_argument("master", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("workers", type=int)
    parser.add_argument("--keep", type=Path, help="write one output here")
    args = parser.parse_args()

    from engine.image.decode import configure
    from engine.image.render import render_all
    from engine.schedule import cores
    from engine.spec.models import ImagePreset, Resize

    configure(max(1, cores() // args.workers))
    made: list[bytes] = []
    if args.contender == "engine":
        preset = ImagePreset(resize=Resize(width=TASK_OUT[0], height=TASK_OUT[1], fit="fill"),
                             format="jpeg", quality=80, progressive=False)
        data = args.master.read_bytes()  # read once, as sharp's task does (sharp_fanout.cjs)

        def op() -> None:
            out = render_all(data, {"t": preset})[0]["t"]
            assert (out.width, out.height) == TASK_OUT
            made[:] = [out.data]
    else:
        def op() -> None:
            image = pyvips.Image.thumbnail(str(args.master), TASK_OUT[0], height=TASK_OUT[1],
                                           size="force")
            made[:] = [image.jpegsave_buffer(Q=80, optimize_coding=True, keep="none")]

    rate, cpu_ms = ops_per_s(op, args.count, args.workers)
    if args.keep:
        args.keep.write_bytes(made[0])
    print(json.dumps({"ops_per_s": rate, "cpu_ms_per_op": cpu_ms, "bytes": len(made[0])}))


if __name__ == "__main__":
    main()
