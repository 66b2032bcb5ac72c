"""Each dataset's sample, written once per session; tests that change files get a copy."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from extractors.datasets import get_dataset

@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Callable[[str], Path]:
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = get_dataset(name).write_sample(tmp_path_factory.mktemp("samples") / name, seed=0)
        return made[name]
    return get


@pytest.fixture
def sample_copy(sample_root, tmp_path) -> Callable[[str], Path]:
    def get(name: str) -> Path:
        return Path(shutil.copytree(sample_root(name), tmp_path / name))
    return get
