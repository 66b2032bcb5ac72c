"""Issue 26 in the trainer: K = 0 is today's path bit for bit (hidden states and template
captions in the store change nothing); K = 1 trains CLIP's last block from the cached
states, held on the device or fed by the host loader alike; template captions are read
when asked, and their absence is one warning line."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from storage import open_group
from storage.schema import ALL_VARIABLES
from storage.store import consolidate, create_array, layout_of
from training.clip_finetune import ClipTail, tail_key_map
from training.clip_init import ClipWeights
from training.planted import write_planted_store
from training.runs import ConfigError, TrainConfig
from training.trainer import train

TOKENS, WIDTH = 5, 64


def add_optional(store: str, seed: int = 0) -> None:
    """Hidden states (K = 1) and template captions, as an extraction with
    --cache-clip-layers 1 --caption-template writes them (random values here)."""
    rng = np.random.default_rng(seed)
    g = open_group(store, mode="r+", consolidated=False)
    lay = layout_of(store)
    extra = {"visual_token": TOKENS, "visual_width": WIDTH, "text_width": WIDTH}
    for name in ("frame_hidden_1", "caption_hidden_1", "caption_template_embedding", "caption_template_tokens",
                 "caption_template_mask"):
        spec = ALL_VARIABLES[name]
        arr = create_array(g, name, dataclasses.replace(spec, chunks={}), lay, sizes=extra)
        if name == "caption_template_mask":
            arr[:] = np.asarray(g["caption_mask"][:])
        elif name == "caption_template_embedding":
            arr[:] = (np.asarray(g["caption_embedding"][:], np.float32) + 0.3 * rng.standard_normal(arr.shape)
                      ).astype(np.float16)
        else:
            arr[:] = rng.standard_normal(arr.shape).astype(np.float16)
    frames = np.asarray(g["frame_hidden_1"][:]) * np.asarray(g["frame_mask"][:])[..., None, None]
    g["frame_hidden_1"][:] = frames
    attrs = dict(g.attrs)
    attrs["provenance"] = {**attrs.get("provenance", {}),
                           "text": {"caption_template": "This is a video about {}.", "weights_sha256": "x"},
                           "frames": {"weights_sha256": "x", "model": "open_clip ViT-B-32"}}
    g.attrs.update(attrs)
    consolidate(store)


def clip_state(depth: int = 2, dim: int = 64) -> dict[str, torch.Tensor]:
    """A small CLIP's tensors under CLIP's names (two blocks per tower, width 64)."""
    torch.manual_seed(0)
    t = ClipTail(depth, WIDTH, WIDTH, dim, False, depth, depth)
    for p in t.parameters():
        torch.nn.init.normal_(p, std=0.05)
    state = {}
    for ours, theirs in tail_key_map(depth, depth, depth).items():
        for n, p in t.named_parameters():
            if n.startswith(ours):
                state[theirs + n[len(ours):]] = p.detach().clone()
    return state


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("ft")
    plain, rich = str(base / "plain.zarr"), str(base / "rich.zarr")
    for p in (plain, rich):
        write_planted_store(p, 40, 2, seed=3)
    add_optional(rich)
    return plain, rich


CFG = dict(epochs=2, batch_size=16, device="cpu", eval_batch_size=64, seed=1)


def run(store, out, **kw) -> tuple[dict, dict]:
    res = train(store, "meanpool", str(out), None, TrainConfig(**{**CFG, **kw}), progress=False, log=lambda m: None,
                score_test=False)
    return res, load_file(str(out / "head.safetensors"))


def test_k0_is_todays_path_bit_for_bit(stores, tmp_path):
    plain, rich = stores
    _, a = run(plain, tmp_path / "a")
    _, b = run(rich, tmp_path / "b", finetune_clip=0, optimizer="adamw", grad_clip_scale=1.0,
               template_captions="off")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from training.heads import create_head
    assert set(a) == set(create_head("meanpool", None, dim=64).state_dict())  # not wrapped
    assert (tmp_path / "a" / "metrics.csv").read_text().split("\n")[1].split(",")[:4] == \
        (tmp_path / "b" / "metrics.csv").read_text().split("\n")[1].split(",")[:4]


def test_hidden_states_are_planned_and_held_as_float16(stores):
    from training.data import load_arrays, select_split, split_nbytes
    from training.device_data import held_nbytes

    _, rich = stores
    data = select_split(rich, "train")
    fields = ("frame_hidden_1", "caption_hidden_1")
    want = (data.n_videos * 12 * TOKENS * WIDTH + data.n_captions * 8 * WIDTH) * 2
    assert split_nbytes(rich, data, fields, None) == want == held_nbytes(rich, data, fields, None)
    arrays = load_arrays(rich, data, fields, None)
    assert arrays["frame_hidden_1"].dtype == arrays["caption_hidden_1"].dtype == np.float16


def test_finetune_one_block_trains_the_tail_resident_or_not(stores, tmp_path):
    _, rich = stores
    state = clip_state()
    weights = ClipWeights("clip.safetensors", "x", state)
    heads = []
    for resident in ("on", "off"):
        out = tmp_path / resident
        res = train(rich, "meanpool", str(out), None, TrainConfig(**CFG, finetune_clip=1, clip_lr=1e-3,
                                                                  resident=resident, optimizer="bertadam"),
                    progress=False, log=lambda m: None, score_test=False, tail_clip=weights)
        assert res["val"] is not None
        heads.append(load_file(str(out / "head.safetensors")))
    a, b = heads
    assert all(torch.equal(a[k], b[k]) for k in a)  # the device-held split and the host loader agree
    start = state["visual.transformer.resblocks.1.attn.in_proj_weight"]  # our block 0 is CLIP's block L - 1
    moved = a["tail.visual.blocks.0.attn.in_proj_weight"]
    assert not torch.equal(moved, start) and (moved - start).abs().max() < 0.05
    assert not torch.equal(a["tail.text.text_projection"], state["text_projection"])
    with pytest.raises(ConfigError, match="--finetune-clip 2 is more than the 1 block input"):
        train(rich, "meanpool", str(tmp_path / "k2"), None, TrainConfig(**CFG, finetune_clip=2), progress=False,
              log=lambda m: None, tail_clip=weights)


def test_template_captions_are_read_when_asked_and_missed_in_one_line(stores, tmp_path):
    plain, rich = stores
    _, raw = run(rich, tmp_path / "raw")
    _, tpl = run(rich, tmp_path / "tpl", template_captions="on")
    assert set(tpl) == {"base." + k for k in raw}  # the head, wrapped
    assert any(not torch.equal(raw[k], tpl["base." + k]) for k in raw)
    logs = []
    train(plain, "meanpool", str(tmp_path / "auto"), None, TrainConfig(**CFG, template_captions="auto"),
          progress=False, log=logs.append, score_test=False)
    warn = [m for m in logs if m.startswith("warning:") and "template" in m]
    assert len(warn) == 1 and "--caption-template" in warn[0] and "\n" not in warn[0]
    with pytest.raises(ConfigError, match="template_captions=on"):
        train(plain, "meanpool", str(tmp_path / "on"), None, TrainConfig(**CFG, template_captions="on"),
              progress=False, log=lambda m: None)
