"""Recipes: every value cites its release line, merge order recipe < flags < --set,
unknown names list the known ones."""
import json
import re

import pytest

from training.heads import head_config
from training.planted import write_planted_store
from training.recipes import FOLDER, load_recipe, recipe_names
from training.runs import ConfigError, TrainConfig

from .conftest import train_cli as run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stores") / "r.zarr")
    write_planted_store(path, 20, 2, audio_share=0.5, splits=(14, 3, 3), seed=0)
    return path


def test_the_three_recipes_load_and_cite_a_source_per_value():
    assert recipe_names() == ["avigate-msrvtt", "clip4clip-meanpool", "waver-msrvtt"]
    for name in recipe_names():
        rec = load_recipe(name)
        TrainConfig(**rec.train)
        head_config(rec.head, rec.head_options, dim=512)
        assert {"epochs", "batch_size", "lr", "clip_lr_scale", "warmup", "weight_decay"} <= set(rec.train)
        with open(f"{FOLDER}/{name}.toml") as f:
            values = [line for line in f if re.match(r'^\s*"?[\w.]+"?\s*=', line)
                      and not line.startswith("head =")]
        assert values and all("#" in line for line in values), name  # a source on every value
    avigate = load_recipe("avigate-msrvtt")
    assert avigate.head_options["audio.query_lr_scale"] == 100.0 and avigate.head_options["margin_delta"] == 0.1


def test_unknown_recipe_lists_the_known_ones(store):
    with pytest.raises(ConfigError, match="known: avigate-msrvtt, clip4clip-meanpool, waver-msrvtt"):
        load_recipe("avigate")
    r = run("train", "--store", store, "--recipe", "avigate", "--out", "x")
    assert r.exit_code == 1 and r.output == ("error: unknown recipe 'avigate' (known: avigate-msrvtt, "
                                             "clip4clip-meanpool, waver-msrvtt)\n")
    r = run("train", "--store", store, "--recipe", "waver-msrvtt", "--head", "meanpool", "--print-config")
    assert r.exit_code == 1 and "trains head 'waver', not --head 'meanpool'" in r.output


def test_print_config_merges_recipe_then_flags_then_set(store, tmp_path):
    r = run("train", "--store", store, "--recipe", "avigate-msrvtt", "--print-config", "--epochs", 2,
            "--set", "lr=0.003", "--set", "margin_delta=0.05", "--set", "n_heads=4")
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.output)
    assert cfg["head"] == "avigate" and cfg["recipe"] == "avigate-msrvtt"
    assert cfg["train"]["batch_size"] == 128 and cfg["train"]["weight_decay"] == 0.2  # the recipe's
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["lr"] == 0.003  # flag, --set over the recipe
    assert cfg["head_config"]["margin_delta"] == 0.05 and cfg["head_config"]["margin_lambda"] == 0.2
    assert cfg["head_config"]["audio"]["query_weight_decay"] == 0.2 and cfg["head_config"]["dim"] == 64
    assert not (tmp_path / "x").exists()


def test_print_config_needs_no_store_and_shows_a_stores_widths(store, tmp_path):
    """Without --store the recipe is shown on the head's default widths; with one, on its
    widths (the planted store's 64 and 32); training itself still needs the store."""
    r = run("train", "--recipe", "avigate-msrvtt", "--print-config")
    assert r.exit_code == 0, r.output
    bare = json.loads(r.output)
    defaults = head_config("avigate", load_recipe("avigate-msrvtt").head_options)
    assert bare["head_config"]["dim"] == defaults.dim != 64
    assert bare["widths"] == {"from": "the head's defaults"}
    r = run("train", "--store", store, "--recipe", "avigate-msrvtt", "--print-config")
    widths = json.loads(r.output)["widths"]
    assert widths["from"] == store and (widths["dim"], widths["audio_dim"]) == (64, 32)
    r = run("train", "--recipe", "avigate-msrvtt", "--out", tmp_path / "run")
    assert r.exit_code == 1 and r.output == "error: --store is required (the feature store to train on)\n"
    assert not (tmp_path / "run").exists()


def test_recipe_reaches_the_optimiser(store, tmp_path):
    """The queries' rate and decay from the recipe are the AdamW group's."""
    from training.heads import create_head
    from training.trainer import optimizer_groups

    rec = load_recipe("avigate-msrvtt")
    head = create_head("avigate", {**rec.head_options, "n_heads": 4}, dim=64, audio_dim=32)
    c = TrainConfig(**rec.train)
    q = [g for g in optimizer_groups(head, c, []) if g["group"] == "queries"]
    assert q[0]["lr"] == pytest.approx(1e-2) and q[0]["weight_decay"] == 0.2
    names = ["resampler.0.ln1.weight", "fusion.0.mlp.0.weight"]
    split = optimizer_groups(head, TrainConfig(**{**rec.train, "clip_lr_scale": 0.1}), names)
    clip = [g for g in split if g["group"].endswith("+clip")]
    assert sorted(len(g["params"]) for g in clip) == [1, 1] and all(g["lr"] == pytest.approx(1e-5) for g in clip)
    assert sum(len(g["params"]) for g in split) == len(list(head.parameters()))
