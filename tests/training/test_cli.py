"""`vtr train` / `vtr eval` on tiny stores: tables, JSON, one-line errors."""
import json

import pytest
import typer
from typer.testing import CliRunner

import vtr.commands.train
from training.planted import write_planted_store


@pytest.fixture(scope="module")
def app():
    app = typer.Typer(pretty_exceptions_enable=False)
    vtr.commands.train.register(app)
    return app


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "tiny.zarr")
    write_planted_store(path, 8, 2, splits=(5, 0, 3), audio_share=0.5, no_audio_fraction=0.3)
    return path


def run(app, *args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_train_and_eval_on_a_tiny_store(app, tiny, tmp_path):
    out = tmp_path / "run"
    r = run(app, "train", "--store", tiny, "--head", "avigate", "--out", out, "--epochs", 2,
            "--batch-size", 4, "--lr", 1e-3, "--audio-tokens", "pool-tokens-4", "--set", "fusion_layers=1",
            "--set", "resampler_layers=1", "--set", "n_heads=4", "--no-progress", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "split 'val' is empty" in r.output  # told, not crashed: the last epoch is kept
    assert "single    t2v" in r.output and (out / "test_metrics.json").exists()
    r = run(app, "eval", "--store", tiny, "--run", out)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "eval_test.json").read_text())
    assert rep["n_videos"] == 3 and set(rep["multi"]["t2v"]) == {"R1", "R5", "R10", "MdR", "MnR"}
    r = run(app, "eval", "--store", tiny, "--run", out, "--split", "val")
    assert r.exit_code == 1 and "split 'val' is empty" in r.output and "Traceback" not in r.output


def test_meanpool_zero_fill_switch_and_errors(app, tiny, tmp_path):
    r = run(app, "train", "--store", tiny, "--head", "meanpool", "--out", tmp_path / "m", "--audio-zero-fill")
    assert r.exit_code == 1 and "reads no audio" in r.output
    r = run(app, "train", "--store", tiny, "--head", "avigate", "--out", tmp_path / "z", "--epochs", 1,
            "--batch-size", 4, "--audio-tokens", "pool-tokens-4", "--audio-zero-fill", "--set", "fusion_layers=1",
            "--set", "resampler_layers=1", "--no-progress")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "z" / "config.json").read_text())["head_config"]["audio"]["zero_fill"] is True
    for args, msg in [
        (("--store", tmp_path / "missing", "--head", "meanpool", "--out", tmp_path / "a"), "no such store"),
        (("--store", tiny, "--head", "nope", "--out", tmp_path / "b"), "unknown head 'nope'"),
        (("--store", tiny, "--head", "avigate", "--out", tmp_path / "c", "--set", "bogus=1"), "no option"),
        (("--store", tiny, "--head", "avigate", "--out", tmp_path / "z"), "already exists"),
        (("--store", tiny, "--head", "meanpool", "--out", tmp_path / "d", "--device", "tpu"), "unknown device"),
        (("--store", tiny, "--head", "meanpool", "--out", tmp_path / "e", "--batch-size", 1), "batch size >= 2"),
    ]:
        r = run(app, "train", *args)
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output, r.output


def test_eval_refuses_another_store(app, tiny, tmp_path):
    other = str(tmp_path / "other.zarr")
    write_planted_store(other, 6, 2, splits=(4, 0, 2))
    out = tmp_path / "run"
    assert run(app, "train", "--store", other, "--head", "meanpool", "--out", out, "--epochs", 1,
               "--batch-size", 4, "--no-progress").exit_code == 0
    r = run(app, "eval", "--store", tiny, "--run", out)
    assert r.exit_code == 1 and "was trained on store" in r.output


def test_empty_train_split(app, tmp_path):
    store = str(tmp_path / "s.zarr")
    write_planted_store(store, 4, 2, splits=(0, 2, 2))
    r = run(app, "train", "--store", store, "--head", "meanpool", "--out", tmp_path / "r", "--no-progress")
    assert r.exit_code == 1 and "split 'train' is empty" in r.output


def test_random_store_with_the_ast_token_layout(app, tmp_path):
    """A store from storage.synthetic with all 1214 AST tokens: pooled to 8 and trained."""
    import numpy as np

    from storage.synthetic import create_synthetic_store, fill_random
    store = str(tmp_path / "rand.zarr")
    create_synthetic_store(store, 24, 2, seed=1, val_fraction=0.2, test_fraction=0.2, dim=64,
                           audio_dim=16, n_words=8)
    fill_random(store, ("frames", "audio", "text"))
    out = tmp_path / "run"
    r = run(app, "train", "--store", store, "--head", "avigate", "--out", out, "--epochs", 1,
            "--batch-size", 8, "--audio-tokens", "pool-time-8", "--set", "fusion_layers=1", "--set", "resampler_layers=1",
            "--set", "n_heads=4", "--no-progress")
    assert r.exit_code == 0, r.output
    pooled = np.load(out / "audio_pool-time-8.npy")
    assert pooled.shape == (24, 8, 16) and np.isfinite(pooled.astype(np.float32)).all()


def test_set_reaches_every_train_config_field_and_unknown_keys_name_the_valid_ones(app, tiny, tmp_path):
    out = tmp_path / "s"
    r = run(app, "train", "--store", tiny, "--head", "meanpool", "--out", out, "--set", "epochs=1",
            "--set", "batch_size=4", "--set", "eval_batch_size=8", "--set", "learn_scale=true", "--no-progress")
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"], cfg["train"]["eval_batch_size"]) == (1, 4, 8)
    assert cfg["head_config"]["learn_scale"] is True
    r = run(app, "train", "--store", tiny, "--head", "meanpool", "--out", tmp_path / "u", "--set", "bogus=1")
    assert r.exit_code == 1 and "no option(s) ['bogus']" in r.output and "Traceback" not in r.output
    assert "eval_batch_size" in r.output and "adapter" in r.output  # the valid keys, both kinds
    r = run(app, "train", "--store", tiny, "--head", "meanpool", "--out", tmp_path / "b", "--epochs", 2,
            "--set", "epochs=1")
    assert r.exit_code == 1 and "given both as a flag and with --set" in r.output
