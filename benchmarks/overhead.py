"""Where the engine's workers spend the catalog job's time: fanout alone, no peers.

    python -m benchmarks.overhead --masters 40 --repeat 2

The catalog job of `python -m benchmarks` (its masters, every built-in channel's image
outputs at fixed qualities), rendered by fanout with one worker per core; per run, the wall
time and the split of `engine_overhead`: overhead_pct (the workers' time outside decode,
resize and encode), tail_idle_pct (workers with nothing left to start while another finished)
and busy_overhead_pct (the rest, as a share of the time workers had work). The last line is
one JSON object with every run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from engine.image.decode import configure
from engine.schedule import cores

from . import bytes as bytes_bench
from . import naive_vs_engine as naive
from . import peers
from .__main__ import engine_run


def measure(masters: int, repeat: int) -> list[dict]:
    configure(1)
    listing = naive.build_catalog(naive.WORK / f"catalog-{masters}", masters)
    fixed = bytes_bench.fixed_config(peers.WORK / "catalog-fixed-config")
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            wall, _, split = engine_run(listing, Path(tmp) / "out", fixed)
        runs.append({"wall_s": round(wall, 2), "workers": cores(), **split})
        print(json.dumps(runs[-1]), flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masters", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps({"masters": args.masters, "runs": measure(args.masters, args.repeat)}))


if __name__ == "__main__":
    main()
