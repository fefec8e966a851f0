"""`fanout` commands: parse, call the API, print. No logic of their own."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import api
from .errors import EXIT_CONFIG, EXIT_FAILURES, ConfigError

console = Console(stderr=True)
out_console = Console()

config_dir_option = click.option(
    "--config-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Folder with channels/ and presets/ that add to or override the built-in ones.",
)
channel_option = click.option(
    "--channel", "channels", multiple=True, metavar="NAME",
    help="Only this channel (repeatable). Default: every channel.",
)


class FanoutGroup(click.Group):
    """Turns ConfigError into exit code 2 with the message, for every command."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(EXIT_CONFIG)


@click.group(cls=FanoutGroup)
@click.version_option(package_name="fanout")
def main() -> None:
    """Render every image a catalog needs for every sales channel, decoding each master once."""


@contextmanager
def _progress(enabled: bool):  # noqa: ANN202
    bar = Progress(
        TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TextColumn("masters"),
        TimeElapsedColumn(), console=console, transient=True, disable=not enabled,
    )
    task = bar.add_task("render", total=None)

    def planned(p):  # noqa: ANN001, ANN202
        bar.update(task, total=len(p.masters))

    def done(n: int) -> None:
        bar.advance(task, n)

    with bar:
        yield planned, done


def _summary_table(result: api.RunResult) -> Table:
    table = Table(title=f"run {result.run_id}: {result.wall_s:.1f} s wall")
    for column, justify in (("channel", "left"), ("derivatives", "right"), ("rendered", "right"),
                            ("skipped", "right"), ("failed", "right"), ("bytes", "right"),
                            ("seconds", "right")):
        table.add_column(column, justify=justify)
    for name, s in result.channels.items():
        table.add_row(name, str(s.derivatives), str(s.ok), str(s.skipped), str(s.failed),
                      f"{s.bytes:,}", f"{s.seconds:.2f}")
    return table


def _report(result: api.RunResult) -> None:
    out_console.print(_summary_table(result))
    out_console.print(f"files:    {result.out}")
    out_console.print(f"manifest: {result.manifest_path}")
    if result.removed:
        out_console.print(f"removed {len(result.removed)} stale derivative(s) "
                          "(master left the catalog or output left its channel)")
    if result.kept_stale:
        out_console.print(f"kept {result.kept_stale} stale derivative(s) (--keep-stale)")
    failed = result.failed
    if failed:
        console.print(f"[bold red]{len(failed)} derivative(s) failed:[/]")
        seen = set()
        for row in failed:
            key = (row["master_id"], row["error"])
            if key not in seen:
                seen.add(key)
                console.print(f"  {row['master_id']}: {row['error']}", highlight=False,
                              soft_wrap=True)


def _render(catalog: str, out: str | Path, progress: bool, **options) -> int:  # noqa: ANN003
    def info(message: str) -> None:
        console.print(message, highlight=False, soft_wrap=True)

    with _progress(progress) as (planned, done):
        result = api.render(catalog, out, on_planned=planned, on_done=done, on_info=info,
                            **options)
    _report(result)
    return result.exit_code


@main.command()
@click.argument("catalog")
@click.option("--out", required=True, metavar="OUT",
              help="Output folder, or an fsspec URL such as s3://bucket/renders.")
@channel_option
@config_dir_option
@click.option("--scheduler", default="threads", show_default=True,
              help="threads, processes, sync, or a dask.distributed address (tcp://host:8786).")
@click.option("--workers", type=int, help="Masters rendered at once (default: one per core).")
@click.option("--max-pixels", type=int, default=api.DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse masters with more pixels than this.")
@click.option("--force", is_flag=True, help="Render everything, even what did not change.")
@click.option("--keep-stale", is_flag=True,
              help="Keep files and rows of masters or outputs that are gone from the catalog or "
                   "channel (default: remove them).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when stderr is a terminal).")
def render(catalog, out, progress, **options) -> None:  # noqa: ANN001, ANN003
    """Render CATALOG (a folder, or a .csv/.parquet listing) into OUT.

    Reruns render only what changed: a master's bytes, a recipe (preset or engine), or an output
    that is missing or altered on disk. Everything else is recorded `skipped`.
    """
    if progress is None:
        progress = console.is_terminal
    sys.exit(_render(catalog, out, progress, **options))


@main.command()
@click.argument("catalog")
@channel_option
@config_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan(catalog, channels, config_dir, as_json) -> None:  # noqa: ANN001
    """Print every derivative per master and channel, without rendering."""
    the_plan = api.plan(catalog, channels, config_dir)
    if as_json:
        doc = {
            "masters": [
                {
                    "id": mp.master.id, "path": mp.master.path, "kind": mp.master.kind,
                    "role": mp.master.role, "product": mp.master.product,
                    "position": mp.master.position, "error": mp.master.error,
                    "derivatives": [
                        {"channel": d.channel, "output": d.output, "preset": d.preset,
                         "format": d.format, "path": d.path, "recipe_hash": d.recipe_hash,
                         "error": d.error}
                        for d in mp.derivatives
                    ],
                    "renders": len(mp.recipes()),
                }
                for mp in the_plan.masters
            ],
            "totals": {"masters": len(the_plan.masters),
                       "derivatives": the_plan.derivative_count,
                       "renders": the_plan.render_count,
                       "per_channel": the_plan.per_channel()},
        }
        click.echo(json.dumps(doc, indent=2))
        return
    for mp in the_plan.masters:
        m = mp.master
        head = f"{m.id}  [{m.kind or 'unknown'}, {m.role}, {m.product} #{m.position}]"
        out_console.print(head, style="bold", highlight=False)
        if m.error:
            out_console.print(f"  will fail: {m.error}", style="red", highlight=False)
        shared = {h for h in mp.recipes() if sum(d.recipe_hash == h for d in mp.derivatives) > 1}
        for d in mp.derivatives:
            note = "  (shared render)" if d.recipe_hash in shared else ""
            problem = f"  will fail: {d.error}" if d.error else ""
            out_console.print(f"  {d.channel:<10} {d.output:<16} {d.format:<5} "
                              f"{d.path or '-'}{note}{problem}", highlight=False)
    table = Table(title="totals")
    table.add_column("channel")
    table.add_column("derivatives", justify="right")
    for name, count in sorted(the_plan.per_channel().items()):
        table.add_row(name, str(count))
    table.add_row("all", str(the_plan.derivative_count), style="bold")
    out_console.print(table)
    out_console.print(f"{len(the_plan.masters)} masters, {the_plan.derivative_count} derivatives, "
                      f"{the_plan.render_count} distinct renders")


@main.command()
@config_dir_option
def channels(config_dir) -> None:  # noqa: ANN001
    """List the channels and the outputs each one makes."""
    config = api.load_config(config_dir)
    for name, channel in sorted(config.channels.items()):
        out_console.print(f"[bold]{name}[/]: {channel.description}", highlight=False)
        for output in channel.outputs:
            p = config.presets[output.preset]
            size = "x".join(str(v) for v in (p.resize.width, p.resize.height) if v)
            when = f"role={output.when.role}" + (
                f", position={output.when.position}" if output.when.position is not None else "")
            out_console.print(f"  {output.name:<16} {p.format:<5} {p.resize.fit:<5} {size:<10} "
                              f"{when:<28} {output.path}", highlight=False)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("fanout-demo"),
              show_default=True, help="Where the demo catalog and its renders go.")
@click.option("--workers", type=int, help="Masters rendered at once (default: one per core).")
def demo(out, workers) -> None:  # noqa: ANN001
    """Build a small synthetic catalog and render every built-in channel."""
    from . import demo as demo_catalog

    out.mkdir(parents=True, exist_ok=True)
    console.print(f"building the demo catalog in {out / 'masters'} ...")
    listing = demo_catalog.build(out)
    sys.exit(_render(str(listing), out / "out", console.is_terminal, workers=workers))


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--from", "older", metavar="RUN_ID", help="Earlier run (default: the one before --to).")
@click.option("--to", "newer", metavar="RUN_ID", help="Later run (default: the latest).")
def diff(out, older, newer) -> None:  # noqa: ANN001
    """What changed between two runs into OUT: added, re-rendered, removed, failed."""
    change = api.diff(out, older, newer)
    out_console.print(f"{change.older or '(nothing)'} -> {change.newer}", style="bold",
                      highlight=False)
    for title, rows in (("added", change.added), ("re-rendered", change.rerendered),
                        ("removed", change.removed), ("failed", change.failed)):
        out_console.print(f"{title}: {len(rows)}", style="bold", highlight=False)
        for row in rows:
            detail = f"  ({row['error']})" if title == "failed" else ""
            out_console.print(f"  {row['master_id']}  {row['channel']}/{row['output']}"
                              f"{detail}", highlight=False, soft_wrap=True)
    out_console.print(f"unchanged (skipped): {change.unchanged}", highlight=False)


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@config_dir_option
def check(out, config_dir) -> None:  # noqa: ANN001
    """Verify OUT against its manifest and the channel rules; exit 1 on any violation."""
    result = api.check(out, config_dir)
    for path, problem in result.problems:
        out_console.print(f"[red]{path}[/]: {problem}", highlight=False, soft_wrap=True)
    bad = len({path for path, _ in result.problems})
    out_console.print(f"{result.checked} files checked, {bad} with problems", highlight=False)
    sys.exit(EXIT_FAILURES if result.problems else 0)


@main.group()
def feed() -> None:
    """Marketplace feeds and exports built from OUT/manifest.parquet."""


out_argument = click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
output_file = click.option("-o", "--output-file", type=click.Path(dir_okay=False, path_type=Path),
                           help="Write here instead of standard output.")


def _feed(kind: str, out: Path, base_url: str, channel: str, output: str | None,
          output_file: Path | None) -> None:
    text, the_feed = api.feed(out, kind, base_url, channel, output)
    if output_file is None:
        click.echo(text, nl=False)
    else:
        output_file.write_text(text)
        console.print(f"{len(the_feed.items)} products -> {output_file} "
                      f"(images: {channel}/{the_feed.output})", highlight=False)
    for problem in the_feed.problems:
        console.print(f"[yellow]warning:[/] {problem}", highlight=False, soft_wrap=True)
    sys.exit(EXIT_FAILURES if the_feed.problems else 0)


feed_options = [
    out_argument,
    click.option("--base-url", required=True, help="Where OUT is published, e.g. https://cdn/x."),
    click.option("--channel", default="web", show_default=True, help="Which channel's images."),
    click.option("--output", help="Which output of the channel (default: its largest images)."),
    output_file,
]


def _with(options):  # noqa: ANN001, ANN202
    def wrap(fn):  # noqa: ANN001, ANN202
        for option in reversed(options):
            fn = option(fn)
        return fn
    return wrap


@feed.command("google")
@_with(feed_options)
def feed_google(out, base_url, channel, output, output_file) -> None:  # noqa: ANN001
    """Google Merchant Center supplemental feed (TSV: id, image_link, additional_image_link)."""
    _feed("google", out, base_url, channel, output, output_file)


@feed.command("meta")
@_with(feed_options)
def feed_meta(out, base_url, channel, output, output_file) -> None:  # noqa: ANN001
    """Meta catalog feed (CSV: id, image_link, additional_image_link, video links)."""
    _feed("meta", out, base_url, channel, output, output_file)


@feed.command("amazon")
@out_argument
@click.option("-o", "--output-file", "target", required=True, type=click.Path(path_type=Path),
              help="A folder, or a file ending in .zip.")
@click.option("--channel", default="amazon", show_default=True)
def feed_amazon(out, target, channel) -> None:  # noqa: ANN001
    """Amazon's files (SKU.MAIN.jpg, SKU.PT01.jpg ...) and a listing.csv, as a folder or zip."""
    problems = api.amazon_export(out, target, channel)
    console.print(f"written {target}", highlight=False)
    for problem in problems:
        console.print(f"[yellow]warning:[/] {problem}", highlight=False, soft_wrap=True)
    sys.exit(EXIT_FAILURES if problems else 0)


@feed.command("manifest")
@out_argument
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@output_file
def feed_manifest(out, fmt, output_file) -> None:  # noqa: ANN001
    """The manifest itself, as CSV or JSON."""
    text = api.export_manifest(out, fmt)
    if output_file is None:
        click.echo(text, nl=False)
    else:
        output_file.write_text(text)


@main.command()
@out_argument
def report(out) -> None:  # noqa: ANN001
    """Write OUT/report.html: a contact sheet of every derivative, with filters."""
    out_console.print(f"report: {api.report(out)}", highlight=False)


if __name__ == "__main__":
    main()
