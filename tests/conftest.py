from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # problem_images, helpers

from engine.image.decode import configure  # noqa: E402

configure(1)


@pytest.fixture(scope="session")
def problem_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import problem_images

    folder = tmp_path_factory.mktemp("problems") / "masters"
    problem_images.write_problem_folder(folder)
    return folder


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory: pytest.TempPathFactory):
    """`fanout demo` run once, as a user would run it: (click result, demo folder)."""
    from click.testing import CliRunner

    from engine.cli import main

    folder = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(main, ["demo", "--out", str(folder)], catch_exceptions=False)
    return result, folder


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by playwright (.ci/run installs chromium; the tests never
    install anything: without it, a browser test skips and says why)."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install '.[test]'")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()
