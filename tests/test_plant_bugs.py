"""`make plant-bugs` stays in step with the code: each plant's text is in its file once,
and each test it names exists (the plants themselves run outside `make test`)."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("plant_bugs", ROOT / "scripts" / "plant_bugs.py")
plant_bugs = sys.modules["plant_bugs"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(plant_bugs)


@pytest.mark.parametrize("plant", plant_bugs.PLANTS, ids=lambda p: p.name)
def test_each_plant_applies_once_and_names_real_tests(plant):
    assert (ROOT / plant.file).read_text().count(plant.old) == 1
    assert plant.new != plant.old
    for test in plant.tests:
        path, _, name = test.partition("::")
        text = (ROOT / path).read_text()
        if name:
            assert re.search(rf"^def {re.escape(name)}\(", text, re.M), test


def test_plant_names_are_unique():
    names = [p.name for p in plant_bugs.PLANTS]
    assert len(names) == len(set(names))
