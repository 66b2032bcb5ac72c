"""A sample store (ffmpeg-made videos, random-init encoders, tiny AST) and two short
training runs on it, made once per session for the search, notebook and report tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_AVIGATE = {"resampler_layers": 1, "fusion_layers": 2, "n_heads": 4, "gate_hidden": 32}


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory, served_sample) -> str:
    from flows.config import ExtractConfig
    from flows.extract import extract_msrvtt

    root = tmp_path_factory.mktemp("vtr-sample")
    data = served_sample(root / "data", n_videos=12, seed=0)
    store = str(root / "msrvtt.zarr")
    extract_msrvtt(data_root=str(data), store=store, config=ExtractConfig(
        random_init=True, ast_size="tiny", crawl_retries=0, workers=1, tag_min_count=2))
    return store


def _train(store: str, head: str, out: Path, overrides, epochs: int, lr: float) -> str:
    from training.runs import TrainConfig
    from training.trainer import train
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(store, head, str(out), overrides, TrainConfig(epochs=epochs, batch_size=16, lr=lr, warmup=0.0),
              progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(before)
    return str(out)


@pytest.fixture(scope="session")
def meanpool_run(sample_store, tmp_path_factory) -> str:
    return _train(sample_store, "meanpool", tmp_path_factory.mktemp("runs") / "meanpool", None, 20, 1e-3)


@pytest.fixture(scope="session")
def avigate_run(sample_store, tmp_path_factory) -> str:
    return _train(sample_store, "avigate", tmp_path_factory.mktemp("runs") / "avigate", TINY_AVIGATE, 2, 1e-4)
