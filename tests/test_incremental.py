"""Nightly operation: reruns render only what changed, stale outputs go, one writer, kill -9."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import problem_images as P
import pytest
from click.testing import CliRunner
from helpers import assert_consistent, read

from engine import api
from engine.cli import main
from engine.errors import ConfigError

CHANNELS = ["email", "instagram"]
# Each test renders five masters through email's quality searches first (~3.5 s): slow set.
pytestmark = pytest.mark.slow
PRESETS = Path(__file__).resolve().parents[1] / "presets"


def fixed_config(root: Path, email: str = "") -> Path:
    """A configuration over the built-in one: Instagram's product presets at a fixed quality
    88 (built in, they search for the quality that matches 88: most of a night's time here),
    and `email`, an edit of email's presets."""
    (root / "presets").mkdir(parents=True, exist_ok=True)
    text = (PRESETS / "instagram.toml").read_text()
    products = text[text.index("[ig-product-feed-square]"):text.index("# Video")]
    (root / "presets" / "instagram.toml").write_text(
        products.replace('quality = "auto"\nmatch_quality = 88', "quality = 88"))
    if email:
        (root / "presets" / "email.toml").write_text(email)
    return root


def write_masters(folder: Path, names: list[str], variant: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        image = P.scene(360 + 20 * i, 240)
        if variant:
            image = image.flipver()
        image.jpegsave(str(folder / f"{name}.jpg"), Q=90)


def statuses(result: api.RunResult) -> dict[tuple[str, str], str]:
    return {(r["master_id"], r["output"]): r["status"] for r in result.rows}


@pytest.fixture()
def night(tmp_path: Path):
    masters = tmp_path / "masters"
    write_masters(masters, ["a", "b", "c", "d", "e"])
    out = tmp_path / "out"  # OUT keeps this configuration: every later run uses it
    first = api.render(masters, out, channels=CHANNELS, config_dir=fixed_config(tmp_path / "c0"))
    assert {r["status"] for r in first.rows} == {"ok"} and len(first.rows) == 30
    assert {r["quality"] for r in first.rows if r["channel"] == "instagram"} == {88}
    return masters, out, tmp_path


def test_a_scripted_night_rerenders_exactly_what_changed(night):
    masters, out, tmp = night
    fixed_config(tmp / "cfg", email=(  # edit one preset: email-600 at another quality
        '[email-600]\nresize = { width = 600, fit = "fit" }\nformat = "jpeg"\nquality = 70\n'
        "max_bytes = 60000\n"))
    write_masters(masters, ["b", "c"], variant=1)  # replace two masters
    (masters / "e.jpg").unlink()  # delete one
    deleted_files = [r["path"] for r in read(out).to_pylist() if r["master_id"] == "e"]

    second = api.render(masters, out, channels=CHANNELS, config_dir=tmp / "cfg")
    got = statuses(second)
    for m in ("b", "c"):
        assert all(got[(m, o)] == "ok" for o in ("w600", "w1200", "product-feed-square",
                                                   "product-story"))
    for m in ("a", "d"):
        assert got[(m, "w600")] == "ok"
        assert all(got[(m, o)] == "skipped" for o in (
            "w1200", "product-feed-square", "product-feed-portrait", "product-feed-landscape",
            "product-story"))
    assert not any(m == "e" for m, _ in got)
    assert len(second.removed) == 6
    assert not any((out / p).exists() for p in deleted_files)
    assert_consistent(out)

    change = api.diff(out)
    assert len(change.rerendered) == 2 * 6 + 2 and len(change.removed) == 6
    assert change.unchanged == 10 and not change.added and not change.failed
    result = CliRunner().invoke(main, ["diff", str(out)])
    assert result.exit_code == 0 and "removed: 6" in result.output


def test_a_no_change_rerun_skips_everything_with_the_previous_file_facts(night):
    masters, out, _ = night
    before = {(r["master_id"], r["output"]): r for r in read(out).to_pylist()}
    again = api.render(masters, out, channels=CHANNELS)
    assert {r["status"] for r in again.rows} == {"skipped"}
    for row in again.rows:
        prev = before[(row["master_id"], row["output"])]
        assert (row["sha256"], row["bytes"], row["width"], row["path"]) == (
            prev["sha256"], prev["bytes"], prev["width"], prev["path"])
        assert row["run_id"] == again.run_id != prev["run_id"]
    assert_consistent(out)


def test_missing_or_altered_outputs_are_rendered_again(night):
    masters, out, _ = night
    (out / "email" / "a" / "w600.jpg").write_bytes(b"garbage")
    (out / "instagram" / "b" / "product-story.jpg").unlink()
    again = statuses(api.render(masters, out, channels=CHANNELS))
    assert {k for k, v in again.items() if v == "ok"} == {("a", "w600"), ("b", "product-story")}
    assert_consistent(out)


def test_force_renders_everything_and_keep_stale_keeps_what_left(night):
    masters, out, _ = night
    assert {r["status"] for r in api.render(masters, out, channels=CHANNELS, force=True).rows} == {
        "ok"}
    (masters / "a.jpg").unlink()
    kept = api.render(masters, out, channels=CHANNELS, keep_stale=True)
    assert kept.kept_stale == 6 and not kept.removed
    assert sum(r["master_id"] == "a" for r in read(out).to_pylist()) == 6
    assert (out / "email" / "a" / "w600.jpg").exists()
    assert_consistent(out)


def test_a_run_of_some_channels_keeps_the_others(night):
    masters, out, _ = night
    again = api.render(masters, out, channels=["email"], force=True)
    assert {r["channel"] for r in again.rows} == {"email"}
    assert {r["channel"] for r in read(out).to_pylist()} == {"email", "instagram"}
    assert_consistent(out)


def test_a_second_writer_is_refused_while_the_first_holds_out(night):
    masters, out, _ = night
    with open(out / ".fanout.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="in use by another fanout render"):
            api.render(masters, out, channels=CHANNELS)
        result = CliRunner().invoke(main, ["render", str(masters), "--out", str(out)])
        assert result.exit_code == 2
    assert api.render(masters, out, channels=CHANNELS).exit_code == 0  # released: goes ahead


def _start(masters: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "render", str(masters), "--out", str(out),
         "--channel", "mobile", "--channel", "email", "--workers", "2", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ),
    )


def _files(out: Path) -> int:
    """Files under OUT now, counted while a run writes and cleans up: a folder may vanish
    under the walk (the run removes what a killed run left), which os.walk tolerates."""
    return sum(1 for _, _, names in os.walk(out) for name in names if "." in name)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_files", [1, 25, 90])
def test_kill_minus_9_at_any_point_then_a_rerun_leaves_out_consistent(tmp_path, kill_after_files):
    masters = tmp_path / "masters"
    write_masters(masters, [f"m{i}" for i in range(8)])
    out = tmp_path / "out"
    for attempt in range(2):  # a killed first run, then a killed rerun over its leftovers
        proc = _start(masters, out)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _files(out) < kill_after_files * (attempt + 1):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = api.render(masters, out, channels=["mobile", "email"])
    assert final.exit_code == 0
    assert len(final.rows) == 8 * 17
    assert_consistent(out)
