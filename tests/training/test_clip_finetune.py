"""Issue 26: CLIP's last K blocks run on the cached hidden states give back the stored
features and open_clip's own forward; gradients reach exactly those blocks; a layer map
that names a wrong block or leaves out ln_post is caught."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from training.clip_finetune import ClipTail, tail_key_map
from training.runs import ConfigError


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A random open_clip ViT-B-32 written as a weights file, every LayerNorm and bias
    moved off its init (an ln_post left at 1/0 would pass unnoticed), and its encoder."""
    import open_clip

    from extractors.clip_encoder import create_clip_encoder

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("clip") / "open_clip_model.safetensors"
    save_file(state, str(path))
    enc = create_clip_encoder(weights=str(path), device="cpu", channels_last=False)
    return enc, state


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


def tail(state, k: int) -> ClipTail:
    t = ClipTail(k, **ClipTail.geometry(state), quickgelu=False)
    t.load_clip(state)
    return t


@pytest.mark.parametrize("k", [1, 2])
def test_tail_on_cached_states_equals_the_stored_features_and_open_clip(clip, k):
    enc, state = clip
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(k))
    feats, hidden = enc.encode_images_hidden(images, k)  # what the frames step stores
    assert hidden.dtype == torch.float16 and hidden.shape == (3, k, 50, 768)
    with torch.no_grad():
        full = enc.model.encode_image(images)  # open_clip's own forward, unhooked
        assert torch.equal(feats, full.float())  # the hooks change nothing
        t = tail(state, k)
        # the tail reads frame_hidden_k: the input of block L - k
        ours = t.visual(hidden[:, k - 1].float())
    assert cos(ours, feats).min() >= 0.999
    assert cos(ours, full).min() >= 0.999

    tokens = enc.tokenize(["a dog runs on the beach", "someone is cooking pasta in a kitchen"])
    out = enc.encode_tokens(tokens, hidden_layers=k)
    assert out[f"caption_hidden_{k}"].shape == (2, 32, 512)
    with torch.no_grad():
        toks, emb = t.captions(out[f"caption_hidden_{k}"].float(), out["caption_mask"])
        import open_clip
        ref = enc.model.encode_text(open_clip.get_tokenizer("ViT-B-32")(["a dog runs on the beach",
                                                                         "someone is cooking pasta in a kitchen"]))
    assert cos(emb, out["caption_embedding"]).min() >= 0.999
    assert cos(emb, ref).min() >= 0.999  # the 77-token tower's EOT
    valid = out["caption_mask"]
    assert cos(toks[valid], out["caption_tokens"][valid]).min() >= 0.999
    assert (toks[~valid] == 0).all()


def test_gradients_reach_exactly_the_tail(clip):
    enc, state = clip
    k = 2
    t = tail(state, k)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    _, hidden = enc.encode_images_hidden(images, k)
    out = enc.encode_tokens(enc.tokenize(["a cat", "two men talk"]), hidden_layers=k)
    v = t.frames(hidden[:, k - 1][:, None].float(), torch.ones(2, 1, dtype=torch.bool))
    _, e = t.captions(out[f"caption_hidden_{k}"].float(), out["caption_mask"])
    (v[:, 0] * e).sum().backward()
    names = {n for n, _ in t.named_parameters()}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in t.parameters())
    # exactly CLIP's blocks 10 and 11 of each tower and the output layers
    read = {theirs for theirs in tail_key_map(k, 12, 12).values()}
    assert read == {"visual.transformer.resblocks.10.", "visual.transformer.resblocks.11.",
                    "transformer.resblocks.10.", "transformer.resblocks.11.", "visual.ln_post.", "visual.proj",
                    "ln_final.", "text_projection"}
    assert len(names) == 2 * k * 12 + 6


def test_a_wrong_block_or_a_missing_ln_post_is_caught(clip, monkeypatch):
    import training.clip_finetune as cf

    enc, state = clip
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    feats, hidden = enc.encode_images_hidden(images, 1)
    right = tail_key_map

    # a wrong block: the tail's block is CLIP's block L-2, not L-1
    monkeypatch.setattr(cf, "tail_key_map", lambda k, v, t: {
        **right(k, v, t), "visual.blocks.0.": f"visual.transformer.resblocks.{v - 2}."})
    with torch.no_grad():
        wrong = tail(state, 1).visual(hidden[:, 0].float())
    assert cos(wrong, feats).min() < 0.99

    # ln_post left out of the map: refused before anything is copied
    monkeypatch.setattr(cf, "tail_key_map", lambda k, v, t: {
        a: b for a, b in right(k, v, t).items() if a != "visual.ln_post."})
    with pytest.raises(ConfigError, match="ln_post"):
        tail(state, 1)
