"""`vtr sweep`: chosen on val only, test scored once, bad grid keys name the valid ones."""
import json

import pytest

from training.planted import write_planted_store
from training.runs import ConfigError
from training.sweep import grid_settings, run_sweep

from .conftest import train_cli as run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stores") / "s.zarr")
    write_planted_store(path, 60, 2, misalign=0.8, splits=(40, 10, 10), seed=2)
    return path


def test_grid_settings_in_order():
    assert grid_settings({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]


def test_sweep_chooses_on_val_and_scores_test_once(store, tmp_path, monkeypatch):
    import training.sweep as sweep
    scored = []
    real = sweep.evaluate_run
    monkeypatch.setattr(sweep, "evaluate_run", lambda s, r, split, *a, **k: scored.append((r, split)) or
                        real(s, r, split, *a, **k))
    out = tmp_path / "sw"
    r = run("sweep", "--store", store, "--head", "meanpool", "--out", out, "--grid", "lr=0.00001,0.01",
            "--grid", "adapter=true", "--epochs", 2, "--batch-size", 16, "--no-progress", "--device", "cpu")
    assert r.exit_code == 0, r.output
    res = json.loads((out / "sweep.json").read_text())
    scores = [row["val_score"] for row in res["runs"]]
    assert res["chosen"] == scores.index(max(scores)) and len(scores) == 2
    assert scored == [(res["runs"][res["chosen"]]["run"], "test")]  # test once, the chosen run only
    assert not any((out / p).joinpath("test_metrics.json").exists() for p in ("lr=1e-05_adapter=True",
                                                                             "lr=0.01_adapter=True"))
    assert res["test"]["multi"]["t2v"]["R1"] >= 0 and "| lr | adapter | val R@1" in r.output
    assert "test, chosen setting only" in r.output


def test_unknown_grid_key_names_the_valid_keys(store, tmp_path):
    r = run("sweep", "--store", store, "--head", "waver", "--out", tmp_path / "x", "--grid", "tag_top=1,2")
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert "no option(s) ['tag_top']" in r.output and "tag_k" in r.output and "lr" in r.output
    r = run("sweep", "--store", store, "--head", "meanpool", "--out", tmp_path / "y", "--grid", "lr")
    assert r.exit_code == 1 and "--grid wants key=v1,v2" in r.output
    with pytest.raises(ConfigError, match="at least one value"):
        run_sweep(store, "meanpool", {"lr": []}, str(tmp_path / "z"))
