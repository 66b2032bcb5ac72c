"""Issue 26 end to end: `vtr extract --cache-clip-layers 2` with a random CLIP weights file
the test writes, then `vtr train --recipe avigate-msrvtt --finetune-clip 2`; the stored
hidden states give back the stored features; the bad inputs are refused in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.vtr.test_clip_init_extracted import vtr


def one_line(r) -> str:
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return lines[-1]


@pytest.mark.slow
def test_extract_then_finetune_two_blocks(weights_store):
    import xarray as xr

    from training.clip_finetune import ClipTail

    tmp, state = weights_store
    store = tmp / "msrvtt.zarr"
    ds = xr.open_zarr(store)
    prov = ds.attrs["provenance"]
    assert prov["frames"]["clip_hidden"]["layers"] == {"frame_hidden_1": 11, "frame_hidden_2": 10}
    assert prov["text"]["clip_hidden"]["k"] == 2 and prov["text"]["caption_template"] == "This is a video about {}."
    assert ds["frame_hidden_2"].attrs["clip_layer"] == 10 and ds["frame_hidden_2"].dtype == np.float16
    assert ds["frame_hidden_1"].encoding["chunks"][0] == 1
    # the cached states through the tail = the stored features (fp16 both ways)
    mask = ds["frame_mask"].values
    tail = ClipTail(2, **ClipTail.geometry(state), quickgelu=False)
    tail.load_clip(state)
    with torch.no_grad():
        v = tail.frames(torch.from_numpy(ds["frame_hidden_2"].values).float(), torch.from_numpy(mask))
        toks, emb = tail.captions(torch.from_numpy(ds["caption_hidden_2"].values).float(),
                                  torch.from_numpy(ds["caption_mask"].values))
    stored = torch.from_numpy(ds["frame_features"].values).float()
    assert F.cosine_similarity(v[torch.from_numpy(mask)], stored[torch.from_numpy(mask)], dim=-1).min() >= 0.999
    assert F.cosine_similarity(emb, torch.from_numpy(ds["caption_embedding"].values).float(), dim=-1).min() >= 0.999
    # the template captions are other features than the raw ones
    assert not np.allclose(ds["caption_template_embedding"].values, ds["caption_embedding"].values)

    r = vtr("train", "--store", store, "--recipe", "avigate-msrvtt", "--finetune-clip", 2, "--out", "run",
            "--epochs", 1, "--device", "cpu", "--no-progress", "--clip-lr", 1e-3, cwd=tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "fine-tuning CLIP's last 2 block(s)" in r.stderr
    cfg = json.loads((tmp / "run" / "config.json").read_text())
    assert cfg["head"] == "clip-finetune" and cfg["head_config"]["base"] == "avigate"
    assert cfg["train"]["optimizer"] == "bertadam" and cfg["init"]["finetune_clip"]["k"] == 2
    head = load_file(str(tmp / "run" / "head.safetensors"))
    # the saved run holds the trained tail: CLIP's block 10 of the visual tower, moved
    start = state["visual.transformer.resblocks.10.mlp.c_fc.weight"]
    got = head["tail.visual.blocks.0.mlp.c_fc.weight"]
    assert got.shape == start.shape and not torch.equal(got, start)
    assert (got - start).abs().max() < 0.1
    r = vtr("eval", "--store", store, "--run", "run", "--split", "test", "--device", "cpu", cwd=tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.slow
def test_bad_inputs_are_one_line(weights_store, tmp_path):
    tmp, _ = weights_store
    store = tmp / "msrvtt.zarr"
    r = vtr("train", "--store", store, "--recipe", "avigate-msrvtt", "--finetune-clip", 3, "--out", "r3",
            "--epochs", 1, "--device", "cpu", "--no-progress", cwd=tmp)
    line = one_line(r)
    assert "--finetune-clip 3" in line and "--cache-clip-layers 2" in line, line

    # the weights file changed since extraction: refused by its sha256
    clip = tmp / "weights" / "open_clip_model.safetensors"
    saved = clip.read_bytes()
    try:
        clip.write_bytes(saved[:-8] + b"\0" * 8)
        r = vtr("train", "--store", store, "--recipe", "avigate-msrvtt", "--finetune-clip", 1, "--out", "rh",
                "--epochs", 1, "--device", "cpu", "--no-progress", cwd=tmp)
        assert "sha256" in one_line(r)
    finally:
        clip.write_bytes(saved)



class Geometry:
    """The encoder geometry ``flows.clip_cache`` reads (a ViT-B-32's)."""
    depth = {"visual": 12, "text": 12}
    visual_tokens, visual_width, text_width = 50, 768, 512


def test_a_store_is_never_mixed(tmp_path):
    from flows.clip_cache import plan_optional
    from storage import StoreError
    from storage.synthetic import create_synthetic_store, fill_random

    store = str(tmp_path / "s.zarr")
    create_synthetic_store(store, n_videos=4)
    names, record = plan_optional(store, "frames", Geometry(), 2, log=lambda m: None)
    assert names == ("frame_hidden_1", "frame_hidden_2") and record["clip_hidden"]["layers"]["frame_hidden_2"] == 10
    # the store holds K = 2: a run without the flag, or with another K, is refused
    for k in (0, 1, 3):
        with pytest.raises(StoreError, match="--cache-clip-layers 2"):
            plan_optional(store, "frames", Geometry(), k, log=lambda m: None)
    # text done without hidden states: they cannot be added afterwards
    fill_random(store, ("text",))
    with pytest.raises(StoreError, match="already has 8 done caption"):
        plan_optional(store, "text", Geometry(), 1, log=lambda m: None)


def test_store_without_hidden_states_names_the_extraction_flag(tmp_path):
    from storage.synthetic import create_synthetic_store, fill_random
    from training.clip_finetune import check_finetune
    from training.runs import ConfigError

    store = str(tmp_path / "s.zarr")
    create_synthetic_store(store, n_videos=4)
    fill_random(store, ("frames", "text"))
    with pytest.raises(ConfigError, match=r"no CLIP hidden states.*--cache-clip-layers 2"):
        check_finetune(store, 2)


def test_disk_check_refuses_in_one_line(tmp_path):
    from storage import StoreError
    from storage.optional import check_free_space

    lines = []
    check_free_space(str(tmp_path / "s.zarr"), {"frame_hidden_1": 10}, log=lines.append)
    assert lines == ["frame_hidden_1: 0.0 MB more on disk"]
    with pytest.raises(StoreError, match=r"frame_hidden_1 need .* GB, the disk has .* GB free"):
        check_free_space(str(tmp_path / "s.zarr"), {"frame_hidden_1": 10**18}, log=lines.append)


FILL_DISK = """
import resource, signal, sys
import numpy as np
from extractors.engine import ItemResult
from flows.step_io import write_results
from storage import StepWriter, StoreError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))  # no file over 0.5 MB: the disk is full
w = StepWriter(sys.argv[1], "frames", extra_variables=("frame_hidden_1",))
rows = {"frame_features": np.ones((12, 64), np.float32), "frame_mask": np.ones(12, bool),
        "frame_hidden_1": np.ones((12, 50, 768), np.float16)}  # 0.9 MB per video chunk
try:
    write_results(w, (ItemResult(i, rows) for i in range(4)))
except StoreError as e:
    print(e)
    sys.exit(3)
"""


def test_a_disk_that_fills_mid_write_fails_the_step_and_marks_nothing_done(tmp_path):
    """A real write failure (the process may not grow a file past 0.5 MB): the frame
    features fit, the hidden states do not. One line, and no video is done."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from flows.clip_cache import plan_optional
    from storage import DONE, StepWriter
    from storage.synthetic import create_synthetic_store

    store = str(tmp_path / "s.zarr")
    create_synthetic_store(store, n_videos=4, dim=64, video_chunk=4)
    plan_optional(store, "frames", Geometry(), 1, log=lambda m: None)
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", FILL_DISK, store], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 3, r.stdout + r.stderr[-3000:]
    line = r.stdout.strip()
    assert "\n" not in line and "writing frames items 0..3 failed" in line and "File too large" in line, line
    assert not (StepWriter(store, "frames").states() == DONE).any()
