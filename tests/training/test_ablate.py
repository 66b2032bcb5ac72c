"""`vtr ablate`: every variant side by side, one Markdown + JSON table, re-runs re-use."""
import json

import pytest
import typer
from typer.testing import CliRunner

import vtr.commands.train
from training.ablate import VARIANTS, format_table, variant_overrides
from training.runs import ConfigError
from training.planted_waver import write_waver_store

TINY = ["--set", "n_heads=4", "--set", "temporal_layers=1", "--set", "resampler_layers=1",
        "--set", "fusion_layers=1", "--set", "gate_hidden=16"]


def run(app, *args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def app():
    app = typer.Typer(pretty_exceptions_enable=False)
    vtr.commands.train.register(app)
    return app


def test_overrides_go_to_the_heads_that_have_them():
    ov = variant_overrides(["meanpool", "waver/kd", "avigate"], {"n_heads": 4, "adapter": False})
    assert ov["meanpool"] == {"adapter": False}
    assert ov["waver/kd"] == {"n_heads": 4, "distill": "kd"}
    assert ov["avigate"] == {"n_heads": 4}
    with pytest.raises(ConfigError, match="no chosen head has"):
        variant_overrides(["meanpool"], {"n_heads": 4})
    with pytest.raises(ConfigError, match="unknown variant"):
        variant_overrides(["waver/teacher"], {})


def test_ablate_prints_and_writes_one_table(app, tmp_path):
    store = tmp_path / "s.zarr"
    write_waver_store(str(store), 60, 2, audio_share=0.25, n_styles=3, style_tied=0.9, n_shift_styles=2,
                      no_tags_fraction=0.1, no_audio_fraction=0.2, splits=(40, 5, 15), seed=2)
    args = ("ablate", "--store", store, "--out", tmp_path / "ab", "--epochs", 1, "--batch-size", 8,
            "--lr", 1e-3, "--audio-tokens", "pool-tokens-4", "--no-progress", *TINY)
    r = run(app, *args)
    assert r.exit_code == 0, r.output
    md = (tmp_path / "ab" / "ablation.md").read_text()
    assert md.startswith("| variant | t2v R@1 |") and md.strip() in r.output
    for v in VARIANTS:
        assert f"| {v} |" in md
    res = json.loads((tmp_path / "ab" / "ablation.json").read_text())
    assert [row["variant"] for row in res["rows"]] == list(VARIANTS)
    for row in res["rows"]:
        assert row["style_gap"] is not None and row["writers_gap"] is not None and row["params"] > 0
        assert set(row["test"]["single"]["v2t"]) == {"R1", "R5", "R10", "MdR", "MnR"}
    assert res["train"]["epochs"] == 1 and res["train"]["seed"] == 0
    kd = next(r for r in res["rows"] if r["variant"] == "waver/kd")
    assert kd["overrides"]["distill"] == "kd" and kd["overrides"]["n_heads"] == 4
    # a second call re-uses the finished runs and gives the same table
    r2 = run(app, *args)
    assert r2.exit_code == 0 and md.strip() in r2.output and "epoch 1/1" not in r2.output
    # another budget into the same folder is refused, nothing is overwritten
    r3 = run(app, "ablate", "--store", store, "--out", tmp_path / "ab", "--epochs", 2, "--no-progress",
             "--variants", "meanpool")
    assert r3.exit_code == 1 and "another configuration" in r3.output
    assert (tmp_path / "ab" / "ablation.md").read_text() == md
    r4 = run(app, "ablate", "--store", store, "--out", tmp_path / "x", "--variants", "nope")
    assert r4.exit_code == 1 and "unknown variant" in r4.output


def test_table_without_style_step_says_na():
    rep = {"single": {d: {"R1": 1.0, "R5": 2.0, "R10": 3.0, "MdR": 4.0, "MnR": 5.0} for d in ("t2v", "v2t")},
           "n_videos": 3}
    md = format_table([{"variant": "meanpool", "test": rep, "style_gap": None, "writers_gap": 2.0,
                        "epoch_s": 0.5, "params": 1234}])
    assert "| meanpool | 1.0 | 2.0 | 3.0 | 4.0 | 5.0 | 1.0 |" in md and "| n/a | 2.0 | 0.50 | 1,234 |" in md


def test_table_scores_by_the_stores_protocol():
    """A multi-sentence store's rows are its multi-caption scores, not the first caption's."""
    one = {"R1": 1.0, "R5": 2.0, "R10": 3.0, "MdR": 4.0, "MnR": 5.0}
    many = {"R1": 7.0, "R5": 8.0, "R10": 9.0, "MdR": 1.0, "MnR": 2.0}
    rep = {"protocol": "multi", "n_videos": 3, "single": {d: one for d in ("t2v", "v2t")},
           "multi": {d: many for d in ("t2v", "v2t")}}
    md = format_table([{"variant": "meanpool", "test": rep, "style_gap": None, "writers_gap": None,
                        "epoch_s": 0.5, "params": 1}])
    assert "| meanpool | 7.0 | 8.0 | 9.0 | 1.0 | 2.0 | 7.0 |" in md and "protocol multi" in md
