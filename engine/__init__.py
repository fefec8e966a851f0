"""fanout: render every derivative a catalog needs for every sales channel, decoding once.

The Python API (stable names; the CLI calls the same functions)::

    import engine

    result = engine.render("catalog.csv", "out", channels=["web"])   # -> engine.RunResult
    result.exit_code, result.failed, result.channels["web"].ok
    engine.plan("catalog.csv")       # -> engine.Plan: what would be rendered (Plan.to_dict())
    engine.check("out")              # -> engine.CheckResult: problems, foreign files, kept rows
    engine.diff("out")               # -> engine.RunDiff: added, re-rendered, removed, failed
    engine.recover("out")            # rebuild a corrupt manifest from the run history

Rows are `engine.Row` (typed fields; `row["sha256"]` works too) with `engine.Status`; the
manifest itself is OUT/manifest.parquet, readable with pyarrow, pandas, polars or duckdb.
`import engine` (and `fanout --help`) loads no codec: pyvips and PyAV load when a run renders.
"""

from __future__ import annotations

# The API is bound here after its modules load, so `engine.plan` and `engine.check` are the
# functions (their modules stay importable as `from engine.plan import ...`).
from .api import (
    ChannelSummary,
    CheckResult,
    RunDiff,
    RunResult,
    amazon_export,
    check,
    diff,
    export_manifest,
    feed,
    plan,
    recover,
    render,
    report,
)
from .errors import ConfigError, FanoutError, RemovalRefused
from .plan import Derivative, MasterPlan, Plan
from .rows import SCHEMA, Row, Status

__version__ = "0.1.0"

__all__ = [
    "SCHEMA", "ChannelSummary", "CheckResult", "ConfigError", "Derivative", "FanoutError",
    "MasterPlan", "Plan", "RemovalRefused", "Row", "RunDiff", "RunResult", "Status",
    "amazon_export", "check", "diff", "export_manifest", "feed", "plan", "recover", "render",
    "report",
]
