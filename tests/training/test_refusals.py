"""Training refuses what would be wrong: silent audio, a second writer, bad values, and a
--resume that would keep an old value silently."""
import json
import os

import pytest

from storage import MISSING, open_group
from training.planted import write_planted_store
from training.runs import RunLock

from .conftest import train_cli

TINY_AVIGATE = ["--set", "fusion_layers=1", "--set", "resampler_layers=1", "--set", "n_heads=4",
                "--audio-tokens", "pool-tokens-4"]
QUICK = ["--epochs", 1, "--batch-size", 4, "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("refusals") / "tiny.zarr")
    write_planted_store(path, 8, 2, splits=(5, 0, 3), audio_share=0.5, no_audio_fraction=0.3)
    return path


@pytest.fixture
def no_audio(tiny, tmp_path):
    """The tiny store as if its audio step never ran."""
    import shutil

    path = str(tmp_path / "silent.zarr")
    shutil.copytree(tiny, path)
    g = open_group(path, mode="r+")
    g["audio_state"][:] = MISSING
    return path


def one_error(r) -> str:
    errors = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert r.exit_code == 1 and len(errors) == 1 and "Traceback" not in r.output, r.output
    return errors[0]


def test_an_audio_head_on_a_store_without_audio_is_refused_unless_allowed(no_audio, tmp_path):
    out = tmp_path / "run"
    line = one_error(train_cli("train", "--store", no_audio, "--head", "avigate", "--out", out,
                               *TINY_AVIGATE, *QUICK))
    assert "audio step is done for none" in line and "--allow-silent" in line
    assert not out.exists()
    r = train_cli("train", "--store", no_audio, "--head", "avigate", "--out", out, "--allow-silent",
                  *TINY_AVIGATE, *QUICK)
    assert r.exit_code == 0, r.output
    warnings = json.loads((out / "config.json").read_text())["warnings"]
    assert len(warnings) == 1 and "--allow-silent" in warnings[0]
    # a head that reads no audio needs none
    r = train_cli("train", "--store", no_audio, "--head", "meanpool", "--out", tmp_path / "m", *QUICK)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args,says", [
    (("--lr", "-0.01"), "lr must be a finite number > 0"),
    (("--lr", "nan"), "lr must be a finite number > 0"),
    (("--set", "fusion_layers=0"), "fusion_layers must be a whole number >= 1"),
    (("--set", "resampler_layers=-1"), "resampler_layers must be a whole number >= 1"),
])
def test_bad_values_are_refused_before_the_run_folder_exists(tiny, tmp_path, args, says):
    out = tmp_path / "run"
    line = one_error(train_cli("train", "--store", tiny, "--head", "avigate", "--out", out,
                               *TINY_AVIGATE, *args, *QUICK))
    assert says in line
    assert not out.exists()  # so the corrected command is not blocked


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(tiny, tmp_path):
    out = tmp_path / "run"
    os.makedirs(out)
    lock = RunLock(str(out))  # a run writing there now
    try:
        line = one_error(train_cli("train", "--store", tiny, "--head", "meanpool", "--out", out, *QUICK))
        assert "another run is writing this folder" in line and f"pid {os.getpid()}" in line
        assert not (out / "config.json").exists()
    finally:
        lock.release()
    r = train_cli("train", "--store", tiny, "--head", "meanpool", "--out", out, *QUICK)
    assert r.exit_code == 0, r.output


def test_resume_with_a_differing_flag_refuses_or_applies_and_says_so(tiny, tmp_path):
    out = tmp_path / "run"
    r = train_cli("train", "--store", tiny, "--head", "meanpool", "--out", out, "--lr", "1e-3", *QUICK)
    assert r.exit_code == 0, r.output
    line = one_error(train_cli("train", "--store", tiny, "--head", "meanpool", "--out", out, "--resume",
                               "--lr", "1e-4", "--no-progress"))
    assert "lr=0.0001 (the run has 0.001)" in line
    line = one_error(train_cli("train", "--store", tiny, "--head", "meanpool", "--out", out, "--resume",
                               "--set", "epochs=3", "--no-progress"))
    assert "epochs=3 (the run has 1)" in line
    # how the run executes may change: applied, and said so
    r = train_cli("train", "--store", tiny, "--head", "meanpool", "--out", out, "--resume",
                  "--eval-batch-size", "16", "--no-progress")
    assert r.exit_code == 0 and "resume: eval_batch_size 16 applied (the run had 256)" in r.output, r.output
