"""The heads learn planted structure; audio helps AVIGATE when the code needs it."""
import json

import numpy as np
import pytest
import torch

from training.data import AudioTokens, pooled_audio, select_split
from training.heads import create_head
from training.evaluate import evaluate_split
from training.runs import TrainConfig
from training.trainer import train

from .conftest import TINY_AVIGATE

FAST = dict(batch_size=32, lr=1e-3, audio_tokens="pool-tokens-8", seed=0)


def zero_shot_r1(store, name, overrides, audio_cache, audio_dim=32):
    torch.manual_seed(0)
    head = create_head(name, overrides, dim=64, audio_dim=audio_dim)
    audio = pooled_audio(store, audio_cache, AudioTokens.parse("pool-tokens-8"), progress=False) if name == "avigate" else None
    rep = evaluate_split(head, store, select_split(store, "test"), audio, torch.device("cpu"))
    return rep["multi"]["t2v"]["R1"]


@pytest.mark.parametrize("name", ["meanpool", "avigate"])
def test_heads_learn_a_shared_code(shared_code_store, tmp_path, name):
    store, _ = shared_code_store
    ov = TINY_AVIGATE if name == "avigate" else None
    before = zero_shot_r1(store, name, ov, str(tmp_path / "a.npy"))
    result = train(store, name, str(tmp_path / "run"), ov, TrainConfig(epochs=4, **FAST),
                   progress=False, log=lambda m: None)
    test = result["test"]
    chance = 100 / test["n_videos"]
    assert test["multi"]["t2v"]["R1"] > 10 * chance, test["multi"]
    assert test["multi"]["t2v"]["R1"] > before + 20, (before, test["multi"])
    assert test["single"]["v2t"]["R1"] > 10 * chance
    saved = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert saved["multi"]["t2v"] == pytest.approx(test["multi"]["t2v"])
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("epoch,step,lr,train_loss")
    assert any(p.name.startswith("events") for p in (tmp_path / "run" / "tb").iterdir())


def test_audio_matters_and_silence_is_safe(split_code_store, tmp_path):
    store, info = split_code_store
    assert 0 < (~info["has_audio"]).sum() < len(info["has_audio"])
    res = {}
    for name, ov in (("meanpool", None), ("avigate", TINY_AVIGATE)):
        res[name] = train(store, name, str(tmp_path / name), ov, TrainConfig(epochs=6, **FAST),
                          progress=False, log=lambda m: None)
    r1 = {k: v["test"]["multi"]["t2v"]["R1"] for k, v in res.items()}
    assert r1["avigate"] > r1["meanpool"] + 15, r1
    rows = (tmp_path / "avigate" / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    gates = float(last[header.index("gate_mha_abs")])
    assert gates > 0.05, gates  # the gates start at exactly zero
    losses = [float(r.split(",")[header.index("train_loss")]) for r in rows[1:]]
    assert np.isfinite(losses).all()
