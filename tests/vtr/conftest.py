"""A sample store (ffmpeg-made videos, random-init encoders, tiny AST) and two short
training runs on it, made once per session for the search, notebook and report tests; and a
store `vtr extract` made from CLIP and AST weights files, for the CLIP initialisation and
fine-tuning tests."""
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


@pytest.fixture(scope="session")
def weights_store(served_sample, prefect_api, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """``(folder, CLIP state)``: `vtr extract` run in ``folder`` on four sample videos with a
    random CLIP file and a random base AST file saved as the releases' are, named by relative
    paths, caching the inputs of CLIP's last two blocks and a caption template; the store is
    ``folder/msrvtt.zarr``, the weights are under ``folder/weights``."""
    from tests.vtr.test_clip_init_extracted import vtr, write_ast, write_clip

    tmp = tmp_path_factory.mktemp("weights-store")
    served_sample(tmp / "data", n_videos=4, seed=0)
    (tmp / "weights").mkdir()
    state = write_clip(tmp / "weights" / "open_clip_model.safetensors")
    write_ast(tmp / "weights" / "audioset_10_10_0.4593.pth")
    r = vtr("extract", "--data-root", "data", "--store", "msrvtt.zarr", "--device", "cpu",
            "--clip-weights", "weights/open_clip_model.safetensors",
            "--ast-weights", "weights/audioset_10_10_0.4593.pth",
            "--cache-clip-layers", "2", "--caption-template", "This is a video about {}.",
            "--crawl-retries", "0", "--workers", "1", "--tag-min-count", "2", cwd=tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "frame_hidden_2: " in r.stdout + r.stderr  # the extra disk, printed before writing
    return tmp, state
