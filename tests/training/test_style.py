"""The style-shift score and `vtr eval --style-shift`."""
import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import vtr.commands.train
from storage import StoreError, open_store
from training.data import select_split
from training.heads import create_head
from storage import write_style_table
from training.planted_waver import write_waver_store
from training.style import MISSING_HINT, style_report


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("style")
    plain = str(root / "plain.zarr")
    write_waver_store(plain, 60, 2, n_shift_styles=0, splits=(40, 5, 15), seed=4)
    styled = str(root / "styled.zarr")
    write_waver_store(styled, 60, 2, n_styles=3, style_tied=0.9, n_shift_styles=2, splits=(40, 5, 15), seed=4)
    return plain, styled


def test_unchanged_rewrites_have_no_gap_and_missing_ones_say_how_to_make_them(stores, tmp_path):
    plain, _ = stores
    data = select_split(plain, "test")
    head = create_head("meanpool", dim=64)
    with pytest.raises(StoreError, match="vtr extract --steps style"):
        style_report(head, plain, data, None, torch.device("cpu"))
    assert "--steps style" in MISSING_HINT
    # "rewrites" identical to their sources: every score is the plain one, the gap is 0
    ds = open_store(plain)
    src = data.captions[data.first_captions()]
    two = np.repeat(src, 2)
    write_style_table(plain, two, np.array(["same", "again"] * src.size), np.array(["x"] * two.size),
                         ds["caption_embedding"].values[two], ds["caption_tokens"].values[two],
                         ds["caption_mask"].values[two])
    with pytest.raises(StoreError, match="already holds style captions"):
        write_style_table(plain, two[:1], np.array(["a"]), np.array(["x"]), np.zeros((1, 64)),
                             np.zeros((1, 8, 64)), np.zeros((1, 8), bool))
    for name, ov in (("meanpool", None), ("waver", {"n_heads": 4, "temporal_layers": 1, "distill": "kd"})):
        torch.manual_seed(0)
        rep = style_report(create_head(name, ov, dim=64).eval(), plain, data, None, torch.device("cpu"))
        assert rep["gap"] == {"same": 0.0, "again": 0.0} and rep["mean_gap"] == 0.0
        assert rep["styles"]["same"] == rep["plain"] and rep["n_style_captions"] == 2 * src.size
        assert rep["writers"] is not None  # two captions per video


def run(app, *args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_eval_style_shift_from_the_cli(stores, tmp_path):
    plain, styled = stores
    app = typer.Typer(pretty_exceptions_enable=False)
    vtr.commands.train.register(app)
    for store, name in ((styled, "s"), (plain, "p")):
        r = run(app, "train", "--store", store, "--head", "waver", "--out", tmp_path / name, "--epochs", 1,
                "--batch-size", 8, "--set", "n_heads=4", "--set", "temporal_layers=1", "--no-progress")
        assert r.exit_code == 0, r.output
    r = run(app, "eval", "--store", styled, "--run", tmp_path / "s", "--style-shift")
    assert r.exit_code == 0, r.output
    assert "mean style-shift gap" in r.output and "writer+1" in r.output and "other writers" in r.output
    rep = json.loads((tmp_path / "s" / "eval_test.json").read_text())
    assert set(rep["style_shift"]["styles"]) == {"writer+1", "writer+2"}
    assert rep["style_shift"]["mean_gap"] == pytest.approx(np.mean(list(rep["style_shift"]["gap"].values())))
    # a store that never ran the style step: one line saying what to run
    fresh = tmp_path / "fresh.zarr"
    write_waver_store(str(fresh), 60, 2, n_shift_styles=0, splits=(40, 5, 15), seed=5)
    r = run(app, "train", "--store", fresh, "--head", "meanpool", "--out", tmp_path / "m", "--epochs", 1,
            "--batch-size", 8, "--no-progress")
    assert r.exit_code == 0, r.output
    r = run(app, "eval", "--store", fresh, "--run", tmp_path / "m", "--style-shift")
    assert r.exit_code == 1 and "vtr extract --steps style" in r.output and "Traceback" not in r.output
