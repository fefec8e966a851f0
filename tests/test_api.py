"""The public API: the README's example runs as written, and importing it loads no codec."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import problem_images as P

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README has one Python example"
    return blocks[0]


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    (tmp_path / "masters").mkdir()
    for name, width in (("shoe", 900), ("bag", 700)):
        P.scene(width, 600).jpegsave(str(tmp_path / "masters" / f"{name}.jpg"), Q=90)
    (tmp_path / "catalog.csv").write_text(
        "id,path,product,position\nshoe,masters/shoe.jpg,SHOE-1,0\nbag,masters/bag.jpg,BAG-2,0\n")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python(), "README.md", "exec"), {})  # noqa: S102 (our own README)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("0 {") and "'web': 48" in printed[0] and "'email': 4" in printed[0]
    assert "'master_id': 'shoe'" in printed[1] and "'path': 'web/shoe/" in printed[1]
    assert printed[-1] == "[]"


def test_the_api_names_and_no_codec_on_import():
    code = ("import sys, engine\n"
            "from engine import render, plan, check, diff, recover, Row, Status, RunResult\n"
            "assert callable(plan) and callable(check), (plan, check)\n"
            "print(sorted(m for m in ('pyvips', 'av', 'dask') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
    helped = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine", "--help"],
                            capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in helped.stderr.splitlines()}
    assert "render" in helped.stdout and not imported & {"pyvips", "av", "dask"}


def test_a_misspelt_column_cannot_pass_silently():
    import pytest

    from engine import Row

    with pytest.raises(TypeError):
        Row(master_id="a", sha265="00")  # the misspelling is the point
    with pytest.raises(KeyError):
        Row(master_id="a")["sha265"]
    assert Row(master_id="a")["sha256"] is None
