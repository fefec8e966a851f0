"""The gallery export at a store's scale: N products of two images each through the web
channel, the way `fanout feed gallery` writes them, against the gallery built in memory from
the channels' rows (how it was built before it streamed).

    python -m benchmarks.gallery_scale --products 20000

Two masters are rendered once through the web channel (fixed qualities); their manifest rows
are copied N times under new master ids, products and paths, and every file they name is
hard-linked at its new path (so each image's placeholder reads a real file). Each way runs in
its own process; the figure is that process's peak RSS (VmHWM) and wall time. The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import peers
from .bookkeeping import peak_rss_kb
from .bytes import fixed_config

BASE_URL = "https://cdn.example.com/shop"


def base_out(work: Path) -> Path:
    """Two product masters (positions 0 and 1) rendered through the web channel, once."""
    root = work / "gallery-base"
    out = root / "out"
    if (out / "manifest.parquet").is_file():
        return out
    from engine import api
    from engine.demo import _to_image, lifestyle_scene

    (root / "masters").mkdir(parents=True, exist_ok=True)
    lines = ["id,path,product,position,role,alt,title"]
    for n in range(2):
        _to_image(lifestyle_scene(1600, 1200)).jpegsave(str(root / "masters" / f"m{n}.jpg"))
        lines.append(f"m{n},masters/m{n}.jpg,P,{n},product,View {n},Thing")
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    result = api.render(root / "list.csv", out, channels=["web"],
                        config_dir=fixed_config(root / "config"))
    assert result.exit_code == 0, result.failed[:1]
    return out


def build(products: int, target: Path, work: Path) -> int:
    """OUT with `products` copies of the base's rows and files; its manifest's row count."""
    source = base_out(work)
    original = pq.read_table(source / "manifest.parquet")
    paths = [p for p in original.column("path").to_pylist() if p]
    parts = []
    for k in range(products):
        prefix = f"s{k:07d}/"

        def prefixed(name: str, table: pa.Table = original, prefix: str = prefix) -> pa.Array:
            column = table.column(name)
            return pc.if_else(pc.is_valid(column), pc.binary_join_element_wise(
                prefix.rstrip("/"), column, "-" if name != "path" else "/"), column)

        copy = original
        for name in ("master_id", "product", "path"):
            copy = copy.set_column(copy.schema.get_field_index(name), name, prefixed(name))
        parts.append(copy)
        for path in paths:
            link = target / prefix / path
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(source / path, link)
    table = pa.concat_tables(parts).replace_schema_metadata(original.schema.metadata)
    pq.write_table(table, target / "manifest.parquet", row_group_size=1 << 16)
    return table.num_rows


def measure(way: str, out: Path) -> dict:
    """In this process: the gallery JSON of `out`, streamed or built whole."""
    from engine import api

    start = time.perf_counter()
    with open(os.devnull, "w", encoding="utf-8") as sink:
        if way == "streamed":
            api.gallery(out, BASE_URL, sink=sink)
        else:  # what api.gallery did before: the channels' rows (its columns), then the doc
            from engine.publish.feeds import check_base_url
            from engine.publish.gallery import GALLERY_COLUMNS, gallery

            _, rows = api._published_rows(out, ["web", "mobile"], columns=GALLERY_COLUMNS)
            doc = gallery(rows, out, check_base_url(BASE_URL))
            sink.write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return {"way": way, "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mb": round(peak_rss_kb() / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--way", choices=["streamed", "whole"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=peers.WORK,
                        help="where the base render and the copies go (default benchmarks/work)")
    args = parser.parse_args()
    if args.way:  # one way, in a process of its own
        print(json.dumps(measure(args.way, args.out)))
        return
    target = args.work / f"gallery-{args.products}"
    if not (target / "manifest.parquet").is_file():
        target.mkdir(parents=True, exist_ok=True)
        build(args.products, target, args.work)
    rows = pq.ParquetFile(target / "manifest.parquet").metadata.num_rows
    report: dict = {"products": args.products, "images": 2 * args.products,
                    "manifest_rows": rows}
    for way in ("streamed", "whole"):
        done = subprocess.run([sys.executable, "-m", "benchmarks.gallery_scale", "--way", way,
                               "--out", str(target)], capture_output=True, text=True,
                              check=True)
        report[way] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{way}: {report[way]}", flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
