"""Checkpoint round trip and resume after an interruption."""
import csv

import pytest
import torch
from safetensors.torch import load_file

from training.data import AudioTokens, pooled_audio, select_split
from training.evaluate import evaluate_run, evaluate_split
from training.runs import RunError, TrainConfig, load_run
from training.trainer import train

from .conftest import TINY_AVIGATE

CFG = dict(epochs=3, batch_size=32, lr=1e-3, audio_tokens="pool-tokens-8", seed=3)


class Interrupt(Exception):
    pass


def quiet(m):
    pass


def test_checkpoint_round_trip_gives_identical_scores(split_code_store, tmp_path):
    store, _ = split_code_store
    run = str(tmp_path / "run")
    result = train(store, "avigate", run, TINY_AVIGATE, TrainConfig(**{**CFG, "epochs": 1}),
                   progress=False, log=quiet)
    head, cfg = load_run(run)
    assert cfg["head"] == "avigate" and cfg["head_config"]["audio"]["fusion_layers"] == 1
    audio = pooled_audio(store, str(tmp_path / "run" / "audio_pool-tokens-8.npy"), AudioTokens.parse("pool-tokens-8"))
    again = evaluate_split(head, store, select_split(store, "test"), audio, torch.device("cpu"))
    assert again["multi"] == result["test"]["multi"] and again["single"] == result["test"]["single"]
    assert evaluate_run(store, run, "test", "cpu", progress=False)["multi"] == result["test"]["multi"]


def test_resume_continues_from_the_last_epoch(split_code_store, tmp_path):
    store, _ = split_code_store
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    train(store, "avigate", full, TINY_AVIGATE, TrainConfig(**CFG), progress=False, log=quiet)

    def stop_after_second_epoch(msg):
        if msg.startswith("epoch 2/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train(store, "avigate", cut, TINY_AVIGATE, TrainConfig(**CFG), progress=False,
              log=stop_after_second_epoch)
    with pytest.raises(RunError, match="already exists"):
        train(store, "avigate", cut, TINY_AVIGATE, TrainConfig(**CFG), progress=False, log=quiet)
    seen = []
    train(store, "avigate", cut, resume=True, progress=False, log=seen.append)
    assert seen[0] == f"resuming {cut} after epoch 2 of 3"
    assert [m.split(":")[0] for m in seen[1:]] == ["epoch 3/3"]

    def rows(run):
        with open(f"{run}/metrics.csv") as f:
            return [{k: v for k, v in r.items() if k != "epoch_s"} for r in csv.DictReader(f)]

    assert rows(cut) == rows(full)
    a, b = load_file(f"{full}/last.safetensors"), load_file(f"{cut}/last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_needs_a_run(split_code_store, tmp_path):
    store, _ = split_code_store
    with pytest.raises(RunError, match="nothing to resume"):
        train(store, "meanpool", str(tmp_path / "none"), resume=True, progress=False, log=quiet)
