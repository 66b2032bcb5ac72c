"""`make mutation`'s bookkeeping (scripts/mutation.py): mutmut's exit codes read into the
table's columns, the score over the mutants a test ran against, a sample's interval, and a
row rewritten without touching the others. mutmut itself runs outside `make test`."""
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_script", ROOT / "scripts" / "mutation.py")
mutation = sys.modules["mutation_script"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation)


def _meta(work: Path, rel: str, codes: dict) -> None:
    path = work / "mutants" / f"{rel}.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes}))


def test_counts_reads_only_the_module_and_sorts_each_exit_code(tmp_path):
    _meta(tmp_path, "training/metrics.py", {"a__1": 1, "a__2": 0, "a__3": -24, "a__4": 33, "a__5": None,
                                            "a__6": 7})
    _meta(tmp_path, "training/metrics_extra.py", {"b__1": 0})  # a name sharing the prefix: not the module
    _meta(tmp_path, "extractors/datasets/vatex.py", {"v__1": 0, "v__2": 3})
    c, survivors = mutation.counts(tmp_path, "training/metrics.py")
    assert c == Counter({"killed": 1, "survived": 1, "timeout": 1, "no tests": 1, "not checked": 1,
                         "suspicious": 1})
    assert survivors == ["a__2"]
    c, survivors = mutation.counts(tmp_path, "extractors/datasets")
    assert c == Counter({"killed": 1, "survived": 1}) and survivors == ["v__1"]


def test_score_counts_timeouts_as_killed_over_the_tested_only():
    c = Counter({"killed": 80, "timeout": 5, "survived": 10, "suspicious": 5, "no tests": 40, "not checked": 900})
    assert mutation.tested(c) == 100
    assert mutation.score(c) == 85.0
    assert mutation.interval(c) == pytest.approx(196 * (0.85 * 0.15 / 100) ** 0.5)
    assert mutation.score(Counter({"no tests": 3})) == 0.0 and mutation.interval(Counter()) == 0.0


def test_write_row_replaces_one_row_and_marks_a_sample(tmp_path, monkeypatch):
    doc = tmp_path / "mutation.md"
    old = "| `training/losses.py` | 21 | 18 | 3 | 0 | 0 | 85.7 % | 2.8 min, 2026-12-01 |"
    doc.write_text(f"intro\n{mutation.TABLE_START}\n| h |\n|---|\n{old}\n"
                   "| `storage/lock.py` | 9 | 9 | 0 | 0 | 90.0 % | 1.0 min |\n"  # before "not reached"
                   f"{mutation.TABLE_END}\nafter\n")
    monkeypatch.setattr(mutation, "DOC", doc)
    mutation.write_row("training/metrics.py", Counter({"killed": 9, "survived": 1, "not checked": 5}), 2.5)
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("\nafter\n")
    rows = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| `")}
    assert list(rows) == list(mutation.MODULES)  # every listed module, in the listing's order
    assert rows["training/losses.py"] == old
    assert rows["storage/lock.py"] == "| `storage/lock.py` | 9 | 9 | 0 | 0 | | 90.0 % | 1.0 min |"
    assert rows["training/metrics.py"].startswith(
        "| `training/metrics.py` | 10 of 15 (sample) | 9 | 1 | 0 | 0 | 90.0 ± 18.6 % | 2.5 min, ")
    assert rows["extractors/frames.py"] == "| `extractors/frames.py` | not run yet | | | | | | |"
