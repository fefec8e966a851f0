"""`fanout check`'s bookkeeping of paths at scale, without a tree on disk: the paths a manifest
claims against the files found under OUT, both N synthetic paths, every file claimed.

    python -m benchmarks.check_paths --paths 30000000 --way pathset
    python -m benchmarks.check_paths --paths 30000000 --way sets    # check before PathSet

Run each way in its own process (the figure is the process's peak RSS). `sets`: the claimed
paths and the files as two Python sets and their difference; `pathset`: checks.PathSet of the
claims, the files looked up a batch of api.CHECK_BATCH at a time, as api.check does.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Iterator
from itertools import islice

from engine.api import CHECK_BATCH
from engine.checks import PathSet


def paths(n: int) -> Iterator[str]:
    """A web channel's thirty outputs a master, as a manifest names them."""
    return (f"web/p{i // 30:07d}/out-{i % 30:02d}-w1200.webp" for i in range(n))


def batches(n: int) -> Iterator[list[str]]:
    found = paths(n)
    while batch := list(islice(found, CHECK_BATCH)):
        yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", type=int, default=1_000_000)
    parser.add_argument("--way", choices=["pathset", "sets"], default="pathset")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.way == "sets":
        unclaimed = set(paths(args.paths)) - set(paths(args.paths))
    else:
        claimed = PathSet()
        for batch in batches(args.paths):
            claimed.update(batch)
        unclaimed = {p for batch in batches(args.paths) for p in claimed.missing(batch)}
    assert not unclaimed
    print(json.dumps({"way": args.way, "paths": args.paths,
                      "seconds": round(time.perf_counter() - start, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                           / 1024)}))


if __name__ == "__main__":
    main()
