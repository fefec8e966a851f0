"""A no-change rerun against the full render of the same catalog (target: at most 5%).

    python -m benchmarks.incremental [--masters 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time

from engine import api
from engine.image.decode import configure

from .naive_vs_engine import WORK, build_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masters", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    configure(1)
    listing = build_catalog(WORK / f"catalog-{args.masters}", args.masters)
    out = WORK / "out-incremental"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    full = api.render(listing, out)
    full_s = time.perf_counter() - start
    reruns = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        again = api.render(listing, out)
        reruns.append(time.perf_counter() - start)
        assert again.skipped == len(again.rows), "a no-change rerun rendered something"
    rerun_s = statistics.median(reruns)
    print(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "masters": args.masters, "derivatives": len(full.rows),
        "full_render_s": round(full_s, 3),
        "no_change_rerun_s": {"median": round(rerun_s, 3), "min": round(min(reruns), 3),
                              "max": round(max(reruns), 3)},
        "rerun_pct_of_full": round(100 * rerun_s / full_s, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
