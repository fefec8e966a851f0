"""`fanout` commands: parse, call the API, print. No logic of their own.

For schedulers (cron, containers, CI): every option can also come from the environment
(`fanout render --help` names each variable), `--json` gives machine-readable output, and the
exit code says what happened: 0 done, 1 finished with failures, 2 nothing done (configuration,
usage, or a file-system error such as a read-only or full OUT), 130 interrupted (SIGINT),
143 terminated (SIGTERM). No traceback reaches a user unless FANOUT_DEBUG=1.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import api
from .errors import EXIT_CONFIG, EXIT_FAILURES, ConfigError

console = Console(stderr=True)
out_console = Console()

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C ended
EXIT_TERMINATED = 143  # 128 + SIGTERM
MAX_LISTED = 20  # paths listed under a refused run's message


def say(*parts: str | tuple[str, str], err: bool = True) -> None:
    """Print one message literally. Every message with user data (paths, ids, errors) goes
    through here: rich markup, emoji codes and highlighting are off, so `masters/[sale] shoe.jpg`
    or an error containing `[red]` prints as is. A part is text, or (text, style)."""
    (console if err else out_console).print(Text.assemble(*parts), highlight=False,
                                            soft_wrap=True)


def _error(message: str) -> None:
    say(("error:", "bold red"), " ", message)


def _debug() -> bool:
    return os.environ.get("FANOUT_DEBUG", "") not in ("", "0")


# Every option can come from the environment: the common ones under the names below, the
# others as FANOUT_<COMMAND>_<OPTION> (auto_envvar_prefix); --help shows each one's variable.
option = functools.partial(click.option, show_envvar=True)

config_dir_option = option(
    "--config-dir", type=click.Path(file_okay=False, path_type=Path), envvar="FANOUT_CONFIG_DIR",
    help="Folder with channels/ and presets/ that add to or override the built-in ones.",
)
channel_option = option(
    "--channel", "channels", multiple=True, metavar="NAME", envvar="FANOUT_CHANNEL",
    help="Only this channel (repeatable; in the environment, names separated by spaces). "
         "Default: every channel.",
)
json_option = option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON).")
reset_config_option = option(
    "--reset-config", is_flag=True,
    help="Use the built-in configuration (plus --config-dir) instead of the one stored in OUT "
         "by its last run.",
)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that `with`
    blocks unwind (OUT's lock released, temporary folders removed). A BaseException: no
    `except Exception` on the way swallows it."""


def _end_children() -> list:
    """Terminate the `processes` scheduler's workers (our own multiprocessing children): left
    alone they would finish, or for SIGTERM sent to us alone go on with, the masters they
    hold, and the pool's shutdown on the way out would wait for them."""
    mp = sys.modules.get("multiprocessing")
    children = mp.active_children() if mp is not None else []
    for child in children:
        child.terminate()
    return children


def _raising(exc_type: type[BaseException]):  # noqa: ANN202
    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        _end_children()
        raise exc_type

    return handler


@contextmanager
def _signals() -> Iterator[None]:
    """While a command runs, SIGTERM raises Terminated and SIGINT KeyboardInterrupt (unless
    SIGINT is ignored, as for a background job), after ending any worker processes. Only the
    main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _raising(Terminated))
    if saved[signal.SIGINT] is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raising(KeyboardInterrupt))
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _os_message(exc: OSError) -> str:
    """`FILE: what went wrong`, the way a shell tool says it."""
    what = exc.strerror or str(exc)
    if exc.filename is None:
        return what
    where = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {os.fsdecode(exc.filename2)}"
    return f"{where}: {what}"


def _rendering_threads() -> list[threading.Thread]:
    """Non-daemon threads running fanout code now: scheduler workers still rendering a master.
    (An idle pool thread waits in the standard library and holds up nothing: a pool thread
    waits only once no task is queued.)"""
    package = os.path.dirname(__file__) + os.sep
    frames = sys._current_frames()  # noqa: SLF001 (the documented way to see other threads)
    busy = []
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        frame = frames.get(thread.ident)
        while frame is not None and not frame.f_code.co_filename.startswith(package):
            frame = frame.f_back
        if frame is not None:
            busy.append(thread)
    return busy


def _stop(message: str, code: int) -> None:
    """Leave after SIGINT or SIGTERM, once the `with` blocks have unwound."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in saved:  # a second Ctrl-C does not cut this short
        signal.signal(signum, signal.SIG_IGN)
    say(message)
    children = _end_children()
    if _rendering_threads() or children:
        # Dask's thread pool workers are non-daemon threads: a normal exit would wait until
        # each one finished the master it is rendering (seconds to minutes for a big one;
        # 28 s measured for 2000x1500 masters through every channel, against 0.2 s now).
        # The cleanup that matters has run (locks released, temporary folders removed), and
        # whatever a worker is writing is a temporary file, or an unrecorded one, that the
        # next run sweeps; so end now, after flushing what was printed.
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    for signum, handler in saved.items():  # called in-process (CliRunner): leave it as it was
        signal.signal(signum, handler)
    sys.exit(code)


class FanoutGroup(click.Group):
    """Every command's errors as one line and an exit code, never a traceback: ConfigError and
    OSError exit 2 with `error: MESSAGE`, anything else 2 with `error: internal error: ...`
    (FANOUT_DEBUG=1 prints the traceback), SIGINT 130, SIGTERM 143."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            with _signals():
                return super().invoke(ctx)
        except ConfigError as exc:
            if _debug():
                traceback.print_exc()
            _error(str(exc))
            paths = list(getattr(exc, "paths", None) or [])  # RemovalRefused: what it would remove
            for path in paths[:MAX_LISTED]:
                say("  ", str(path))
            if len(paths) > MAX_LISTED:
                say(f"  ... and {len(paths) - MAX_LISTED} more")
            sys.exit(EXIT_CONFIG)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                BrokenPipeError):
            raise  # usage errors and a closed stdout: click's own handling
        except OSError as exc:  # read-only or full OUT, OUT under a file, a permission
            if _debug():
                traceback.print_exc()
            _error(_os_message(exc))
            sys.exit(EXIT_CONFIG)
        except Exception as exc:
            if _debug():
                traceback.print_exc()
            _error(f"internal error: {type(exc).__name__}: {exc} "
                   "(run with FANOUT_DEBUG=1 for the traceback)")
            sys.exit(EXIT_CONFIG)
        except KeyboardInterrupt:
            if _debug():
                traceback.print_exc()
            _stop("interrupted", EXIT_INTERRUPTED)
        except Terminated:
            if _debug():
                traceback.print_exc()
            _stop("terminated", EXIT_TERMINATED)


@click.group(cls=FanoutGroup, context_settings={"auto_envvar_prefix": "FANOUT"})
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

    def planned(masters: int) -> None:
        bar.update(task, total=masters)

    def done(n: int) -> None:
        bar.advance(task, n)

    with bar:
        yield planned, done


def _summary_table(result: api.RunResult) -> Table:
    """Counts per channel; `failed` says how many of its failures still serve their last
    good file ("3 (2 kept)"). Kept narrow enough for an 80-column log."""
    table = Table(title=Text(f"run {result.run_id}: {result.wall_s:.1f} s wall"))
    for column in ("channel", "derivatives", "rendered", "skipped", "failed", "bytes",
                   "seconds"):
        table.add_column(column, justify="left" if column == "channel" else "right",
                         no_wrap=True)
    for name, s in result.channels.items():
        failed = f"{s.failed} ({s.kept} kept)" if s.kept else str(s.failed)
        table.add_row(Text(name), str(s.derivatives), str(s.ok), str(s.skipped), failed,
                      f"{s.bytes:,}", f"{s.seconds:.2f}")
    return table


def _report(result: api.RunResult) -> None:
    out_console.print(_summary_table(result))
    say(f"files:    {result.out}", err=False)
    say(f"manifest: {result.manifest_path}", err=False)
    if getattr(result, "cleaned", 0):
        say(f"removed {result.cleaned} file(s) an interrupted run had left", err=False)
    if result.removed:
        say(f"removed {len(result.removed)} stale derivative(s) "
            "(master left the catalog or output left its channel)", err=False)
    if result.kept_stale:
        say(f"kept {result.kept_stale} stale derivative(s) (--keep-stale)", err=False)
    failed = result.failed
    if failed:
        kept = sum(r.status == "kept" for r in failed)
        say((f"{len(failed)} derivative(s) failed"
             + (f", {kept} still serving their last good file" if kept else "") + ":",
             "bold red"))
        seen = set()
        for row in failed:
            key = (row.master_id, row.error, row.status, row.stale_since)
            if key in seen:
                continue
            seen.add(key)
            if row.status == "kept":
                say(f"  {row.master_id}: {row.error} (still serving the file from run "
                    f"{row.stale_since or 'an earlier run'})")
            else:
                say(f"  {row.master_id}: {row.error}")


ROW_KEYS = ("master_id", "channel", "output", "status", "error")


def _rows_json(rows: Iterable[api.Row]) -> list[dict]:
    return list(_row_items(rows))


def _row_items(rows: Iterable[api.Row]) -> Iterator[dict]:
    for row in rows:
        item = {k: getattr(row, k) for k in ROW_KEYS}
        if row.status == "kept":
            item["stale_since"] = row.stale_since
        yield item


def _summary_json(result: api.RunResult) -> dict:
    return {
        "run_id": result.run_id,
        "out": str(result.out),
        "manifest": str(result.manifest_path),
        "wall_s": round(result.wall_s, 3),
        "exit_code": result.exit_code,
        "channels": {name: (dataclasses.asdict(s) if dataclasses.is_dataclass(s) else vars(s))
                     for name, s in result.channels.items()},
        "failed": _rows_json(result.failed),
        "kept": getattr(result, "kept", 0),
        "removed": len(result.removed),
        "kept_stale": result.kept_stale,
        "cleaned": getattr(result, "cleaned", 0),
    }


def _echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def _echo_json_rows(doc: dict[str, Any]) -> None:
    """_echo_json for a document whose lists of rows may be long (a first night's diff lists
    every derivative): each row is written as it is read, never all held as dicts at once."""
    out = sys.stdout  # where click.echo writes (Click 8.5 deprecates get_text_stream)
    out.write("{")
    for i, (key, value) in enumerate(doc.items()):
        out.write(f"{',' if i else ''}\n  {json.dumps(key)}: ")
        if isinstance(value, Sequence) and not isinstance(value, str):
            out.write("[")
            for j, item in enumerate(_row_items(value)):
                out.write(f"{',' if j else ''}\n    {json.dumps(item, default=str)}")
            out.write("\n  ]" if value else "]")
        else:
            out.write(json.dumps(value, default=str))
    out.write("\n}\n")


def _render(catalog: str, out: str | Path, progress: bool, as_json: bool = False,
            **options) -> int:  # noqa: ANN003
    with _progress(progress) as (planned, done):
        result = api.render(catalog, out, on_planned=planned, on_done=done, on_info=say,
                            **options)
    if as_json:
        _echo_json(_summary_json(result))
    else:
        _report(result)
    return result.exit_code


def _removals(ctx: click.Context, param: click.Parameter,  # noqa: ARG001
              value: str | None) -> str | None:
    """--max-removals: a number of files, or a percentage of the published ones."""
    if value is None:
        return None
    if not re.fullmatch(r"\d+(\.\d+)?%?", value.strip()):
        raise click.BadParameter(f"expected a number of files, or a percentage like 10%; "
                                 f"found {value!r}")
    return value.strip()


@main.command()
@click.argument("catalog")
@option("--out", required=True, metavar="OUT", envvar="FANOUT_OUT",
        help="Output folder, or an fsspec URL such as s3://bucket/renders.")
@channel_option
@config_dir_option
@option("--scheduler", default="threads", show_default=True, envvar="FANOUT_SCHEDULER",
        help="threads, processes, sync, or a dask.distributed address (tcp://host:8786).")
@option("--workers", type=int, envvar="FANOUT_WORKERS",
        help="Masters rendered at once (default: one per core).")
@option("--max-pixels", type=int, default=api.DEFAULT_MAX_PIXELS, show_default=True,
        envvar="FANOUT_MAX_PIXELS", help="Refuse masters with more pixels than this.")
@option("--max-master-bytes", type=int, default=None, metavar="N",
        help="Refuse masters larger than this many bytes (default: 2 GiB).")
@option("--memory", metavar="SIZE", envvar="FANOUT_MEMORY",
        help="What a local run's masters may take at once, by their estimated peaks, e.g. "
             "12GiB (default: 80% of the memory available). On a cluster: the workers' "
             "MEMORY resource.")
@option("--force", is_flag=True, help="Render everything, even what did not change.")
@option("--verify", is_flag=True, envvar="FANOUT_VERIFY",
        help="Read and hash every master, rather than trusting an unchanged change token "
             "(size, mtime, ctime, inode; an object store's ETag or version).")
@option("--keep-stale", is_flag=True,
        help="Keep files and rows of masters or outputs that are gone from the catalog or "
             "channel (default: remove them).")
@option("--allow-removals", is_flag=True,
        help="Remove what the run made stale, however many files that is (no --max-removals "
             "limit).")
@option("--max-removals", metavar="N|P%", callback=_removals,
        help="Refuse the run (exit 2, nothing changed) if it would remove more published files "
             "than this; default 10% of them (or up to 10 files while under a quarter of "
             "them). A run never removes every published file without --allow-removals.")
@reset_config_option
@option("--progress/--no-progress", default=None,
        help="Show a progress bar (default: when stderr is a terminal).")
@json_option
def render(catalog, out, progress, as_json, **options) -> None:  # noqa: ANN001, ANN003
    """Render CATALOG (a folder, or a .csv/.parquet listing) into OUT.

    Reruns render only what changed: a master's bytes, a recipe (preset or engine), or an output
    that is missing or altered on disk. Everything else is recorded `skipped`.
    """
    if progress is None:
        progress = console.is_terminal
    sys.exit(_render(catalog, out, progress, as_json, **options))


@main.command()
@click.argument("catalog")
@channel_option
@config_dir_option
@json_option
def plan(catalog, channels, config_dir, as_json) -> None:  # noqa: ANN001
    """Print every derivative per master and channel, without rendering."""
    the_plan = api.plan(catalog, channels, config_dir)
    if as_json:
        _echo_json(the_plan.to_dict())
        return
    for mp in the_plan.masters:
        m = mp.master
        say((f"{m.id}  [{m.kind or 'unknown'}, {m.role}, {m.product} #{m.position}]", "bold"),
            err=False)
        if m.error:
            say((f"  will fail: {m.error}", "red"), err=False)
        shared = {h for h in mp.recipes() if sum(d.recipe_hash == h for d in mp.derivatives) > 1}
        for d in mp.derivatives:
            note = "  (shared render)" if d.recipe_hash in shared else ""
            problem = f"  will fail: {d.error}" if d.error else ""
            say(f"  {d.channel:<10} {d.output:<16} {d.format:<5} {d.path or '-'}{note}{problem}",
                err=False)
    table = Table(title="totals")
    table.add_column("channel")
    table.add_column("derivatives", justify="right")
    for name, count in sorted(the_plan.per_channel().items()):
        table.add_row(Text(name), str(count))
    table.add_row("all", str(the_plan.derivative_count), style="bold")
    out_console.print(table)
    say(f"{len(the_plan.masters)} masters, {the_plan.derivative_count} derivatives, "
        f"{the_plan.render_count} distinct renders", err=False)


def _size(preset: Any) -> str:
    return "x".join(str(v) for v in (preset.resize.width, preset.resize.height) if v)


@main.command()
@config_dir_option
@json_option
def channels(config_dir, as_json) -> None:  # noqa: ANN001
    """List the channels and the outputs each one makes."""
    config = api.load_config(config_dir)
    if as_json:
        _echo_json([
            {"name": name, "description": channel.description, "outputs": [
                {"name": o.name, "preset": o.preset, "format": config.presets[o.preset].format,
                 "fit": config.presets[o.preset].resize.fit,
                 "size": _size(config.presets[o.preset]),
                 "when": {"role": o.when.role, "position": o.when.position}, "path": o.path}
                for o in channel.outputs]}
            for name, channel in sorted(config.channels.items())
        ])
        return
    for name, channel in sorted(config.channels.items()):
        say((name, "bold"), f": {channel.description}", err=False)
        for output in channel.outputs:
            p = config.presets[output.preset]
            when = f"role={output.when.role}" + (
                f", position={output.when.position}" if output.when.position is not None else "")
            say(f"  {output.name:<16} {p.format:<5} {p.resize.fit:<5} {_size(p):<10} "
                f"{when:<28} {output.path}", err=False)


@main.command()
@option("--out", type=click.Path(path_type=Path), default=Path("fanout-demo"),
        show_default=True, help="Where the demo catalog and its renders go.")
@option("--workers", type=int, envvar="FANOUT_WORKERS",
        help="Masters rendered at once (default: one per core).")
def demo(out, workers) -> None:  # noqa: ANN001
    """Build a small synthetic catalog and render every built-in channel."""
    from . import demo as demo_catalog

    out.mkdir(parents=True, exist_ok=True)
    say(f"building the demo catalog in {out / 'masters'} ...")
    listing = demo_catalog.build(out)
    code = _render(str(listing), out / "out", console.is_terminal, workers=workers)
    say(f"storefront: {api.storefront(out / 'out')} (open it in a browser)")
    sys.exit(code)


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@option("--from", "older", metavar="RUN_ID", help="Earlier run (default: the one before --to).")
@option("--to", "newer", metavar="RUN_ID", help="Later run (default: the latest).")
@json_option
def diff(out, older, newer, as_json) -> None:  # noqa: ANN001
    """What changed between two runs into OUT: added, re-rendered, removed, failed."""
    change = api.diff(out, older, newer)
    groups = (("added", change.added), ("rerendered", change.rerendered),
              ("removed", change.removed), ("failed", change.failed))
    if as_json:
        _echo_json_rows({"older": change.older, "newer": change.newer, **dict(groups),
                         "unchanged": change.unchanged})
        return
    say((f"{change.older or '(nothing)'} -> {change.newer}", "bold"), err=False)
    for title, rows in groups:
        say((f"{title.replace('rerendered', 're-rendered')}: {len(rows)}", "bold"), err=False)
        for row in rows:
            detail = f"  ({row.error})" if title == "failed" else ""
            say(f"  {row.master_id}  {row.channel}/{row.output}{detail}", err=False)
    say(f"unchanged (skipped): {change.unchanged}", err=False)


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@config_dir_option
@reset_config_option
@json_option
def check(out, config_dir, reset_config, as_json) -> None:  # noqa: ANN001
    """Verify OUT against its manifest and the channel rules; exit 1 on any violation.

    Uses the configuration OUT was made with unless --config-dir or --reset-config says
    otherwise. Files fanout did not write are listed as foreign and left alone; derivatives
    that failed but still serve their last good file are listed as kept.
    """
    result = api.check(out, config_dir, reset_config, on_info=lambda message: say(message))
    if as_json:
        _echo_json({"checked": result.checked,
                    "problems": [{"path": path, "problem": problem}
                                 for path, problem in result.problems],
                    "foreign": result.foreign, "kept": _rows_json(result.kept)})
    else:
        for path, problem in result.problems:
            say((path, "red"), f": {problem}", err=False)
        for path in result.foreign:
            say((path, "yellow"), ": foreign: not written by fanout (left alone)", err=False)
        for row in result.kept:
            say((row.path, "yellow"), f": kept: serving the file from run "
                f"{row.stale_since}; its derivative failed: {row.error}", err=False)
        bad = len({path for path, _ in result.problems})
        say(f"{result.checked} files checked, {bad} with problems, {len(result.foreign)} "
            f"foreign, {len(result.kept)} kept after a failure", err=False)
    sys.exit(EXIT_FAILURES if result.problems else 0)


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
def recover(out) -> None:  # noqa: ANN001
    """Rebuild a corrupt or missing OUT/manifest.parquet from the run history in OUT/_runs.

    The broken manifest is kept in OUT/_runs/; no output file is touched.
    """
    rows, run = api.recover(out)
    say(f"rebuilt {out}/manifest.parquet: {rows} rows, as of run {run}", err=False)


@main.group()
def feed() -> None:
    """Marketplace feeds and exports built from OUT/manifest.parquet."""


out_argument = click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
output_file = option("-o", "--output-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write here instead of standard output.")


def _warn(problem: str) -> None:
    say(("warning:", "yellow"), f" {problem}")


def _feed(kind: str, out: Path, base_url: str, channel: str, output: str | None,
          output_file: Path | None, **options) -> None:  # noqa: ANN003
    text, the_feed = api.feed(out, kind, base_url, channel, output, **options)
    if output_file is None:
        click.echo(text, nl=False)
    else:
        output_file.write_text(text)
        say(f"{len(the_feed.items)} products -> {output_file} "
            f"(images: {channel}/{the_feed.output})")
    for problem in the_feed.problems:
        _warn(problem)
    sys.exit(EXIT_FAILURES if the_feed.problems else 0)


feed_options = [
    out_argument,
    option("--base-url", required=True, envvar="FANOUT_BASE_URL",
           help="Where OUT is published, e.g. https://cdn/x."),
    option("--channel", default="web", show_default=True, help="Which channel's images."),
    option("--output", help="Which output of the channel (default: its largest images)."),
    output_file,
]


def _with(options):  # noqa: ANN001, ANN202
    def wrap(fn):  # noqa: ANN001, ANN202
        for o in reversed(options):
            fn = o(fn)
        return fn
    return wrap


@feed.command("google")
@_with(feed_options)
@option("--apparel", is_flag=True, help="Apparel products: Google's minimum image size is "
        "250x250 instead of 100x100 (or a catalog column `apparel` = true per master).")
def feed_google(out, base_url, channel, output, output_file, apparel) -> None:  # noqa: ANN001
    """Google Merchant Center supplemental feed (TSV: id, image_link, additional_image_link)."""
    _feed("google", out, base_url, channel, output, output_file, apparel=apparel)


@feed.command("meta")
@_with(feed_options)
@option("--video-channel", help="Channel of the one video per product (default: instagram's "
        "feed-video, else the product's first MP4).")
@option("--video-output", help="Output of the one video per product.")
def feed_meta(out, base_url, channel, output, output_file, video_channel,  # noqa: ANN001
              video_output) -> None:
    """Meta catalog feed (CSV: id, image_link, additional_image_link, video[0].url)."""
    _feed("meta", out, base_url, channel, output, output_file, video_channel=video_channel,
          video_output=video_output)


@feed.command("amazon")
@out_argument
@option("-o", "--output-file", "target", required=True, type=click.Path(path_type=Path),
        help="A folder, or a file ending in .zip.")
@option("--channel", default="amazon", show_default=True)
def feed_amazon(out, target, channel) -> None:  # noqa: ANN001
    """Amazon's files (SKU.MAIN.jpg, SKU.PT01.jpg ...) and a listing.csv, as a folder or zip."""
    problems = api.amazon_export(out, target, channel)
    say(f"written {target}")
    for problem in problems:
        _warn(problem)
    sys.exit(EXIT_FAILURES if problems else 0)


@feed.command("gallery")
@out_argument
@option("--base-url", required=True, envvar="FANOUT_BASE_URL",
        help="Where OUT is published, e.g. https://cdn/x ('.' for a page inside OUT).")
@option("--format", "fmt", type=click.Choice(["json", "html"]), default="json",
        show_default=True)
@option("--channel", default="web", show_default=True, help="Which channel's images.")
@option("--video-channel", default="mobile", show_default=True,
        help="Which channel's product videos.")
@output_file
def feed_gallery(out, base_url, fmt, channel, video_channel, output_file) -> None:  # noqa: ANN001
    """Product galleries for a storefront: srcset/<picture> sets, sizes, placeholders, videos."""
    if output_file is None:
        api.gallery(out, base_url, fmt, channel, video_channel, sys.stdout)
    else:  # a temporary beside it, renamed when whole: a failed export leaves the file as it was
        from .store import stream_atomic, text_writer

        stream_atomic(output_file, text_writer(
            lambda sink: api.gallery(out, base_url, fmt, channel, video_channel, sink)))
        say(f"gallery -> {output_file}")


@feed.command("manifest")
@out_argument
@option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
        show_default=True)
@output_file
def feed_manifest(out, fmt, output_file) -> None:  # noqa: ANN001
    """The manifest itself, as CSV or JSON."""
    if output_file is None:
        # bytes under the text layer, flushed first (Click 8.5 deprecates get_binary_stream)
        sys.stdout.flush()
        api.export_manifest(out, fmt, sys.stdout.buffer)
    else:  # a temporary beside it, renamed when whole: a failed export leaves the file as it was
        from .store import stream_atomic

        stream_atomic(output_file, lambda sink: api.export_manifest(out, fmt, sink))


@main.command()
@out_argument
@option("--catalog", metavar="CATALOG", default=None,
        help="The listing or folder OUT was rendered from (default: the one the last run "
             "recorded): the editor's loop starts from its crops file and names the file it "
             "saves.")
@option("--channel", "channels", multiple=True, metavar="CHANNEL",
        help="Only these channels' derivatives (repeat for several).")
@option("--status", "statuses", multiple=True,
        type=click.Choice(["ok", "skipped", "kept", "failed", "n/a"]),
        help="Only derivatives with these statuses (repeat for several).")
@option("--master", metavar="GLOB", help="Only masters whose id matches, e.g. 'SHOE-*'.")
@option("--limit", type=click.IntRange(min=0), default=api.REPORT_MASTERS, show_default=True,
        help="At most this many masters, those with a failure first (0: every master).")
def report(out, catalog, channels, statuses, master, limit) -> None:  # noqa: ANN001
    """Write OUT/report.html: a contact sheet of OUT's derivatives, with filters, and the
    editor's loop (focal points and crop boxes, saved as the catalog's crops file).

    The header counts the whole manifest; the page shows the masters the options select."""
    target = api.report(out, catalog, channels=channels, statuses=statuses, master=master,
                        limit=limit, on_info=lambda message: say(message))
    say(f"report: {target}", err=False)


if __name__ == "__main__":
    main()
