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
