"""The command line as a scheduler sees it: exit codes, one-line messages printed literally,
no traceback, prompt exit on SIGINT / SIGTERM, options from the environment, --json."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import problem_images as P
import pytest
import pyvips
from click.testing import CliRunner
from nights import as_foreground

from engine import api
from engine.cli import main
from engine.rows import Row

BIN = Path(sys.executable).parent / "fanout"
COMMAND = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "engine.cli"]
CHANNELS = ("amazon", "email", "instagram", "mobile", "web")


def fanout(*args: str, cwd: Path | None = None, env: dict | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The whole of stderr, which must be one line and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def small_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two product masters rendered into the email channel."""
    root = tmp_path_factory.mktemp("small")
    (root / "masters").mkdir()
    for name in ("shoe", "bag"):
        P.scene(480, 320).jpegsave(str(root / "masters" / f"{name}.jpg"))
    out = root / "out"
    assert api.render(root / "masters", out, channels=["email"]).exit_code == 0
    return out


# --- messages printed literally -------------------------------------------------------------

def test_brackets_in_paths_and_errors_print_as_they_are(tmp_path):
    catalog = tmp_path / "[x] shop [/]"  # "[/]" makes two folders: "[x] shop [" and "]"
    catalog.mkdir(parents=True)
    for name in ("ok", "[sale] shoe [red]"):
        P.scene(300, 200).jpegsave(str(catalog / f"{name}.jpg"))
    out = tmp_path / "[x] out [/]"
    result = fanout("render", str(catalog), "--out", str(out), "--channel", "email")
    assert result.returncode == 1, result.stderr
    assert f"files:    {out}\n" in result.stdout
    assert f"manifest: {out}/manifest.parquet" in result.stdout
    assert f"  [sale] shoe [red]: {catalog}/[sale] shoe [red].jpg: invalid id" in result.stderr
    assert "Traceback" not in result.stderr

    missing = tmp_path / "[x]" / "[/]gone [bold]"
    result = fanout("plan", str(missing))
    assert result.returncode == 2
    assert one_error_line(result) == f"error: {missing}: catalog not found"


def test_a_config_error_with_markup_prints_literally(tmp_path):
    folder = tmp_path / "conf [/]"
    (folder / "presets").mkdir(parents=True)
    path = folder / "presets" / "[red]mine.toml"
    path.write_text('[sq]\nresize = { width = 100, fit = "fit" }\nformat = "jpeg"\n'
                    'background = "[red]"\n')
    result = fanout("channels", "--config-dir", str(folder))
    assert result.returncode == 2
    assert one_error_line(result) == (
        f"error: {path}: sq.background: expected a colour like '#ffffff'; found '[red]'")


# --- no traceback reaches a user --------------------------------------------------------------

def test_out_under_a_regular_file_is_one_line_exit_2(tmp_path, small_out):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = fanout("render", str(small_out.parent / "masters"), "--out",
                    str(blocker / "out"), "--channel", "email")
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("error: ") and str(blocker) in line


def test_an_oserror_names_the_file_and_its_reason(tmp_path, small_out):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = fanout("feed", "manifest", str(small_out), "-o", str(blocker / "m.csv"))
    assert result.returncode == 2
    assert one_error_line(result) == f"error: {blocker / 'm.csv'}: Not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_read_only_out_is_one_line_exit_2(tmp_path, small_out):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = fanout("render", str(small_out.parent / "masters"), "--out", str(out),
                        "--channel", "email")
    finally:
        out.chmod(0o755)
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith(f"error: {out}") and "ermission denied" in line


def test_out_nobody_can_write_is_one_line_exit_2(small_out):
    """As root too: /proc/sys is a folder where no file can be created."""
    result = fanout("render", str(small_out.parent / "masters"), "--out", "/proc/sys",
                    "--channel", "email")
    assert result.returncode == 2
    assert one_error_line(result).startswith("error: /proc/sys")


def test_disk_full_while_writing_the_manifest(monkeypatch, tmp_path):
    def full(*args, **kwargs):  # noqa: ANN002, ANN003, ARG001
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/manifest.parquet")

    monkeypatch.setattr(api, "render", full)
    result = CliRunner().invoke(main, ["render", str(tmp_path), "--out", "out"])
    assert result.exit_code == 2
    assert result.stderr == "error: out/manifest.parquet: No space left on device\n"


def test_an_unexpected_error_is_one_line_and_the_traceback_on_request(monkeypatch, tmp_path):
    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ARG001
        raise RuntimeError("boom [red]x[/]")

    monkeypatch.setattr(api, "render", broken)
    monkeypatch.delenv("FANOUT_DEBUG", raising=False)
    result = CliRunner().invoke(main, ["render", str(tmp_path), "--out", "out"])
    assert result.exit_code == 2
    assert result.stderr == ("error: internal error: RuntimeError: boom [red]x[/] "
                             "(run with FANOUT_DEBUG=1 for the traceback)\n")
    debug = CliRunner().invoke(main, ["render", str(tmp_path), "--out", "out"],
                               env={"FANOUT_DEBUG": "1"})
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.endswith("(run with FANOUT_DEBUG=1 for the traceback)\n")


def test_a_refused_removal_lists_twenty_paths_and_a_count(monkeypatch, tmp_path):
    from engine.errors import RemovalRefused

    paths = [f"web/m{i:02d}/zoom.jpg" for i in range(25)]

    def refused(*args, **kwargs):  # noqa: ANN002, ANN003, ARG001
        raise RemovalRefused("out: the run would remove 25 of 30 published files [web]",
                             paths, 30)

    monkeypatch.setattr(api, "render", refused)
    result = CliRunner().invoke(main, ["render", str(tmp_path), "--out", "out"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: out: the run would remove 25 of 30 published files [web]",
        *[f"  {p}" for p in paths[:20]],
        "  ... and 5 more",
    ]


# --- SIGINT and SIGTERM -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_masters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 noisy 2000x1500 JPEGs: a run long enough to be interrupted while rendering."""
    folder = tmp_path_factory.mktemp("big") / "masters"
    folder.mkdir()
    for i in range(20):
        noise = pyvips.Image.gaussnoise(2000, 1500, mean=128, sigma=40)
        image = (pyvips.Image.black(2000, 1500, bands=3) + noise).cast("uchar")
        image.jpegsave(str(folder / f"m{i:02d}.jpg"))
    return folder


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code", "word", "scheduler"), [
    (signal.SIGINT, 130, "interrupted", "threads"),
    (signal.SIGTERM, 143, "terminated", "threads"),
    (signal.SIGTERM, 143, "terminated", "processes"),
])
def test_a_signal_while_rendering_exits_promptly_with_its_code(tmp_path, big_masters, signum,
                                                               code, word, scheduler):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*COMMAND, "render", str(big_masters), "--out", str(out), "--workers", "2",
         "--scheduler", scheduler, "--channel", "amazon", "--channel", "instagram"],  # a few
        # outputs a master: the first master is written soon, the other 19 keep the run going
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
        preexec_fn=as_foreground,
    )
    try:
        deadline = time.monotonic() + 120
        while not any((out / c).is_dir() for c in CHANNELS):  # the first master is written
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "never started rendering"
            time.sleep(0.05)
        time.sleep(0.3)  # workers are rendering the next masters
        assert proc.poll() is None, "finished before the signal: make the run longer"
        workers = children_of(proc.pid)
        assert (len(workers) >= 2) == (scheduler == "processes"), workers
        sent = time.monotonic()
        proc.send_signal(signum)  # to the process alone, as `kill` or a container runtime does
        stdout, stderr = proc.communicate(timeout=60)
        waited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, stderr
    assert waited < 5, f"took {waited:.1f} s to exit"
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == word, stderr
    assert stdout == ""
    assert list(scratch.iterdir()) == []  # the run's temporary folder was removed
    time.sleep(0.5)
    assert [pid for pid in workers if running(pid)] == []  # no worker process left behind


# --- options from the environment -------------------------------------------------------------

def shop_config(root: Path) -> Path:
    (root / "channels").mkdir(parents=True)
    (root / "channels" / "shop.toml").write_text(
        'name = "shop"\ndescription = "our own shop"\n'
        '[[outputs]]\nname = "tile"\npreset = "email-600"\npath = "{id}/tile.{ext}"\n')
    return root


def test_config_dir_from_the_environment(tmp_path, small_out):
    conf = shop_config(tmp_path / "conf")
    listed = fanout("channels", env={"FANOUT_CONFIG_DIR": str(conf)})
    assert listed.returncode == 0, listed.stderr
    assert "shop: our own shop" in listed.stdout
    assert "shop" not in fanout("channels").stdout.split()  # only from the environment
    planned = fanout("plan", str(small_out.parent / "masters"), "--json",
                     env={"FANOUT_CONFIG_DIR": str(conf), "FANOUT_CHANNEL": "shop email"})
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["totals"]["per_channel"] == {"email": 4, "shop": 2}


@pytest.mark.slow  # a fanout process per command's --help (~5 s)
def test_help_names_the_environment_variable_of_every_option():
    result = fanout("render", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # help is wrapped to the terminal
    for name in ("FANOUT_CONFIG_DIR", "FANOUT_OUT", "FANOUT_SCHEDULER", "FANOUT_WORKERS",
                 "FANOUT_MAX_PIXELS", "FANOUT_CHANNEL", "FANOUT_RENDER_FORCE",
                 "FANOUT_RENDER_MAX_REMOVALS", "FANOUT_MEMORY", "FANOUT_VERIFY"):
        assert f"[env var: {name}" in text, name
    options = [p for p in main.commands["render"].params if p.param_type_name == "option"]
    assert len(options) >= 14
    assert text.count("[env var: FANOUT_") == len(options)  # --help itself has none
    for command in (["feed", "google"], ["channels"], ["check"], ["feed", "amazon"]):
        shown = " ".join(fanout(*command, "--help").stdout.split())
        assert "[env var: FANOUT_" in shown, command
    assert "[env var: FANOUT_BASE_URL" in " ".join(
        fanout("feed", "google", "--help").stdout.split())


def test_render_options_come_from_the_environment_and_reach_the_api(monkeypatch, tmp_path):
    seen = {}

    def fake(catalog, out, **kwargs):  # noqa: ANN001, ANN003
        seen.update(kwargs, catalog=catalog, out=out)
        raise SystemExit(0)

    monkeypatch.setattr(api, "render", fake)
    result = CliRunner().invoke(main, ["render", "cat", "--allow-removals", "--max-removals",
                                       "10%", "--reset-config", "--max-master-bytes", "1000"],
                                env={"FANOUT_OUT": str(tmp_path / "o"),
                                     "FANOUT_SCHEDULER": "sync", "FANOUT_WORKERS": "3",
                                     "FANOUT_MAX_PIXELS": "1000000", "FANOUT_CHANNEL": "web email",
                                     "FANOUT_CONFIG_DIR": str(tmp_path),
                                     "FANOUT_RENDER_FORCE": "1"})
    assert result.exit_code == 0, result.output
    assert seen["out"] == str(tmp_path / "o") and seen["catalog"] == "cat"
    assert seen["scheduler"] == "sync" and seen["workers"] == 3
    assert seen["max_pixels"] == 1_000_000 and seen["channels"] == ("web", "email")
    assert seen["config_dir"] == tmp_path and seen["force"] is True
    assert seen["allow_removals"] is True and seen["max_removals"] == "10%"
    assert seen["reset_config"] is True and seen["max_master_bytes"] == 1000
    seen.clear()
    result = CliRunner().invoke(main, ["render", "cat", "--out", "o"])
    assert seen["allow_removals"] is False and seen["max_removals"] is None
    assert seen["reset_config"] is False and seen["max_master_bytes"] is None
    bad = CliRunner().invoke(main, ["render", "cat", "--out", "o", "--max-removals", "ten"])
    assert bad.exit_code == 2 and "--max-removals" in bad.stderr


# --- kept rows and --json ---------------------------------------------------------------------

def a_result(tmp_path: Path) -> api.RunResult:
    return api.RunResult(
        run_id="R2", out=str(tmp_path / "o"), manifest_path=str(tmp_path / "o/manifest.parquet"),
        wall_s=1.25,
        failed=[Row(master_id="shoe", channel="web", output="zoom", status="kept",
                    error="shoe.jpg: truncated [x]", stale_since="R1"),
                Row(master_id="bag", channel="web", output="zoom", status="failed",
                    error="bag.jpg: not an image")],
        channels={"web": api.ChannelSummary(derivatives=3, ok=1, failed=2, kept=1, bytes=10)},
    )


def test_a_kept_row_says_which_run_still_serves_its_file(monkeypatch, tmp_path):
    monkeypatch.setattr(api, "render", lambda *a, **k: a_result(tmp_path))
    result = CliRunner().invoke(main, ["render", "cat", "--out", "o"])
    assert result.exit_code == 1
    assert "  shoe: shoe.jpg: truncated [x] (still serving the file from run R1)\n" in (
        result.stderr)
    assert "  bag: bag.jpg: not an image\n" in result.stderr
    web = next(line for line in result.stdout.splitlines() if "web" in line)
    assert "2 (1 kept)" in web  # the failed column says how many still serve a file


def test_render_json(monkeypatch, tmp_path):
    monkeypatch.setattr(api, "render", lambda *a, **k: a_result(tmp_path))
    result = CliRunner().invoke(main, ["render", "cat", "--out", "o", "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["run_id"] == "R2" and doc["exit_code"] == 1 and doc["removed"] == 0
    assert doc["out"] == str(tmp_path / "o") and doc["manifest"].endswith("manifest.parquet")
    assert doc["channels"]["web"]["kept"] == 1 and doc["channels"]["web"]["failed"] == 2
    assert doc["failed"][0] == {"master_id": "shoe", "channel": "web", "output": "zoom",
                                "status": "kept", "error": "shoe.jpg: truncated [x]",
                                "stale_since": "R1"}
    assert doc["failed"][1]["status"] == "failed"


def test_check_diff_and_channels_json(small_out):
    runner = CliRunner()
    check = runner.invoke(main, ["check", str(small_out), "--json"])
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout) == {"checked": 4, "problems": [], "foreign": [], "kept": []}
    diff = json.loads(runner.invoke(main, ["diff", str(small_out), "--json"]).stdout)
    assert diff["older"] is None and diff["unchanged"] == 0
    assert sorted((r["master_id"], r["output"]) for r in diff["added"]) == [
        ("bag", "w1200"), ("bag", "w600"), ("shoe", "w1200"), ("shoe", "w600")]
    assert diff["added"][0] == {"master_id": diff["added"][0]["master_id"], "channel": "email",
                                "output": diff["added"][0]["output"], "status": "ok",
                                "error": None}
    assert diff["rerendered"] == diff["removed"] == diff["failed"] == []
    channels = json.loads(runner.invoke(main, ["channels", "--json"]).stdout)
    amazon = next(c for c in channels if c["name"] == "amazon")
    main_image = next(o for o in amazon["outputs"] if o["name"] == "main")
    assert main_image == {"name": "main", "preset": main_image["preset"], "format": "jpeg",
                          "fit": "pad", "size": "2000x2000",
                          "when": {"role": "product", "position": 0},
                          "path": "{product}.MAIN.{ext}"}


def test_check_json_lists_problems(tmp_path, small_out):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(small_out, out)
    victim = next(p for p in (out / "email").rglob("*.jpg"))
    victim.write_bytes(b"not a jpeg")
    result = CliRunner().invoke(main, ["check", str(out), "--json"])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert problems and problems[0]["path"] == victim.relative_to(out).as_posix()
    assert problems[0]["problem"]


def test_ctrl_c_in_process_exits_130_and_leaves_the_handlers_as_they_were(monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ARG001
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "render", interrupted)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(main, ["render", str(tmp_path), "--out", "out"])
    assert result.exit_code == 130 and result.stderr == "interrupted\n"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_bad_memory_budget_stops_the_run_before_out_exists(tmp_path):
    (tmp_path / "masters").mkdir()
    P.scene(60, 40).jpegsave(str(tmp_path / "masters" / "a.jpg"))
    out = tmp_path / "out"
    result = fanout("render", str(tmp_path / "masters"), "--out", str(out), "--memory", "lots",
                    "--no-progress")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --memory: expected a size like 12GiB or 8000000000; " \
                                    "found 'lots'"
    assert not out.exists()
