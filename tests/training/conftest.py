"""Planted-structure stores shared by the training tests (written once per session)."""
from __future__ import annotations

import pytest
import torch

from training.planted import write_planted_store

# tiny AVIGATE: one resampler and one fusion layer at width 64
TINY_AVIGATE = {"resampler_layers": 1, "fusion_layers": 1, "n_heads": 4, "gate_hidden": 32,
                "query_lr_scale": 10.0}


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The heads here are tiny: one thread is as fast, and it does not stall when other
    processes share the two cores (OpenMP threads then wait on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_code_store(tmp_path_factory):
    """Captions and frames share the whole code; frames bent far from the caption space."""
    path = str(tmp_path_factory.mktemp("stores") / "shared.zarr")
    info = write_planted_store(path, 300, 3, misalign=0.8, audio_share=0.0, seed=1)
    return path, info


@pytest.fixture(scope="session")
def split_code_store(tmp_path_factory):
    """Half of the code only in frames, half only in audio (a head that reads one of them
    sees half the code); a tenth of the videos silent."""
    path = str(tmp_path_factory.mktemp("stores") / "split.zarr")
    info = write_planted_store(path, 300, 3, audio_share=0.5, misalign=0.5, noise=1.0,
                               caption_noise=0.7, code_dim=8, no_audio_fraction=0.1, seed=2)
    return path, info


def train_cli(*args):
    """`vtr train`/`eval`/`sweep`/`ablate` in process, on an app of the training commands alone."""
    import typer
    from typer.testing import CliRunner

    import vtr.commands.train

    app = typer.Typer()
    vtr.commands.train.register(app)
    return CliRunner().invoke(app, [str(a) for a in args])
