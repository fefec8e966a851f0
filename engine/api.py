"""What the CLI and the tests call: plan() and render(). No printing here."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import manifest
from .catalog import load_catalog
from .errors import EXIT_FAILURES, EXIT_OK, ConfigError
from .image.decode import DEFAULT_MAX_PIXELS  # noqa: F401 (re-exported for the CLI)
from .job import JobSettings
from .plan import Plan
from .plan import plan as build_plan
from .spec import Config, load_config  # noqa: F401 (load_config re-exported)


def engine_id() -> str:
    from .image.render import ENGINE_ID

    return ENGINE_ID


def plan(
    catalog: str | Path,
    channels: list[str] | tuple[str, ...] | None = None,
    config_dir: str | Path | None = None,
    exclude: Path | None = None,
    config: Config | None = None,
) -> Plan:
    """Every derivative each master needs for the chosen channels (all by default)."""
    config = config or load_config(config_dir)
    selected = config.select(channels)
    masters = load_catalog(catalog, exclude=exclude)
    return build_plan(masters, selected, config.presets, engine_id())


@dataclass
class ChannelSummary:
    derivatives: int = 0
    ok: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0  # summed render time of this channel's derivatives


@dataclass
class RunResult:
    run_id: str
    out: Path
    manifest_path: Path
    rows: list[dict]
    wall_s: float
    channels: dict[str, ChannelSummary] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURES if self.failed else EXIT_OK


def _summarise(rows: list[dict]) -> dict[str, ChannelSummary]:
    out: dict[str, ChannelSummary] = {}
    for row in rows:
        s = out.setdefault(row.get("channel") or "(none)", ChannelSummary())
        s.derivatives += 1
        if row["status"] == "failed":
            s.failed += 1
        else:
            s.ok += 1
            s.bytes += row.get("bytes") or 0
            s.seconds += (row.get("render_ms") or 0.0) / 1000
    return dict(sorted(out.items()))


def render(
    catalog: str | Path,
    out: str | Path,
    channels: list[str] | tuple[str, ...] | None = None,
    config_dir: str | Path | None = None,
    scheduler: str = "threads",
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_planned: Callable[[Plan], None] | None = None,
    on_done: Callable[[int], None] | None = None,
) -> RunResult:
    """Render every derivative; write the files and OUT/manifest.parquet.

    Raises ConfigError (nothing rendered) for bad configuration or usage; a bad master never
    raises, it becomes `failed` rows.
    """
    start = time.perf_counter()
    if max_pixels < 1:
        raise ConfigError(f"--max-pixels: expected a positive number; found {max_pixels}")
    out_path = Path(out).resolve()
    if out_path.exists() and not out_path.is_dir():
        raise ConfigError(f"{out_path}: --out must be a folder; found a file")
    the_plan = plan(catalog, channels, config_dir, exclude=out_path)
    if on_planned is not None:
        on_planned(the_plan)
    out_path.mkdir(parents=True, exist_ok=True)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    settings = JobSettings(out=str(out_path), run_id=run_id, max_pixels=max_pixels)

    from . import schedule  # Dask is imported only by runs that render

    rows = schedule.run(the_plan.masters, the_plan.presets, settings, scheduler, workers, on_done)
    manifest_path = manifest.write(out_path, rows)
    return RunResult(
        run_id=run_id, out=out_path, manifest_path=manifest_path, rows=rows,
        wall_s=time.perf_counter() - start, channels=_summarise(rows),
    )
