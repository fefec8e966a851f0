"""Derivatives per second at 1, 2, 4 ... workers (one thread, one libvips thread each).

Workers are dask.distributed worker processes on this machine (a LocalCluster), so the numbers
show how the engine scales across processes, the way it scales across a cluster's machines.

    python -m benchmarks.scaling [--masters 8] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time

from engine import api

from .naive_vs_engine import WORK, build_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masters", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    from distributed import LocalCluster

    listing = build_catalog(WORK / f"catalog-{args.masters}", args.masters)
    results = {}
    for n in args.workers:
        out = WORK / f"out-scaling-{n}"
        shutil.rmtree(out, ignore_errors=True)
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            start = time.perf_counter()
            result = api.render(listing, out, scheduler=cluster.scheduler_address)
            wall = time.perf_counter() - start
        assert result.exit_code == 0
        results[n] = {"wall_s": round(wall, 2),
                      "derivatives_per_s": round(len(result.rows) / wall, 2)}
        print(f"{n} workers: {wall:.2f} s, {len(result.rows) / wall:.2f} derivatives/s",
              flush=True)
    base = results[args.workers[0]]["derivatives_per_s"]
    print(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "masters": args.masters,
        "workers": results,
        "speedup": {n: round(r["derivatives_per_s"] / base, 2) for n, r in results.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
