"""End to end: `vtr extract` with CLIP and AST weights files (random values, saved as the
releases' files are), then `vtr train --recipe avigate-msrvtt` from another folder starts
the head's transformers from the CLIP file the store names and says how many tensors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from storage import open_store
from tests.extractors.test_ast_encoder import _to_audioset_naming

ROOT = Path(__file__).resolve().parents[2]


def vtr(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vtr.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def write_clip(path: Path) -> dict[str, torch.Tensor]:
    """open_clip's ViT-B-32 at random, saved as open_clip's ``open_clip_model.safetensors``."""
    import open_clip

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in open_clip.create_model("ViT-B-32", pretrained=None).state_dict().items()}
    save_file(state, str(path))
    return state


def write_ast(path: Path) -> None:
    """The base AST at random, saved as ``audioset_10_10_0.4593.pth`` is (timm names under
    DataParallel's ``module.``, the classifier heads included)."""
    from extractors.ast_encoder import create_ast_encoder

    enc = create_ast_encoder(random_init=True, seed=1, device="cpu")
    torch.save(_to_audioset_naming(enc.model.state_dict()), path)


def test_weights_paths_are_recorded_absolute(tmp_path, monkeypatch):
    from flows.config import ExtractConfig

    monkeypatch.chdir(tmp_path)
    cfg = ExtractConfig(clip_weights="weights/clip.pt", ast_weights="ast")
    assert (cfg.clip_weights, cfg.ast_weights) == (str(tmp_path / "weights" / "clip.pt"), str(tmp_path / "ast"))
    assert ExtractConfig(random_init=True).clip_weights is None


@pytest.mark.slow
def test_recipe_on_a_store_extracted_with_weights_files(weights_store, tmp_path):
    folder, clip = weights_store
    # the weights were named by relative paths, resolved where `vtr extract` ran: the store
    # records them absolute
    clip_file = folder / "weights" / "open_clip_model.safetensors"
    prov = open_store(str(folder / "msrvtt.zarr")).attrs["provenance"]
    assert prov["frames"]["weights"] == str(clip_file)
    assert prov["audio"]["weights"] == str(folder / "weights" / "audioset_10_10_0.4593.pth")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lr = 1e-4
    r = vtr("train", "--store", folder / "msrvtt.zarr", "--recipe", "avigate-msrvtt", "--out", "run",
            "--epochs", 1, "--device", "cpu", "--no-progress", "--set", f"lr={lr}", cwd=elsewhere)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the recipe's 4 + 4 layers x 12 tensors, and the frame positions
    assert f"initialised 97 tensors from CLIP ({clip_file})" in r.stderr, r.stderr[-3000:]
    assert "start at random" not in r.stderr

    run = elsewhere / "run"
    assert json.loads((run / "config.json").read_text())["init"]["weights"] == str(clip_file)
    head = load_file(str(run / "head.safetensors"))
    # one epoch is a step or two (the recipe's batch of 128 holds the sample's train split;
    # distinct-video batches may add one), and the recipe's BertAdam moves a weight by at
    # most about lr a step (no bias correction: 0.1 / sqrt(0.02) = 0.71 of the rate, plus
    # decay); a head that missed the copy is off by the weights' own scale (0.01-0.1)
    bound = 3 * lr
    pairs = [("resampler.0.self_attn.in_proj_weight", clip["transformer.resblocks.0.attn.in_proj_weight"]),
             ("fusion.3.mlp.0.weight", clip["transformer.resblocks.3.mlp.c_fc.weight"]),
             ("frame_embedding", clip["positional_embedding"][:12])]
    for name, want in pairs:
        assert (head[name].float() - want).abs().max() <= bound, name
        assert want.abs().max() > 50 * bound, name
