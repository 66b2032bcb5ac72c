"""CLIP frames and captions: what the features are, masks, determinism, batching, and
weight loading from every supported format (checkpoints written from a random model)."""
from __future__ import annotations

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from extractors.clip_encoder import ClipEncoderConfig, create_clip_encoder
from extractors.weights import WeightsError
from storage.provenance import RANDOM_INIT, sha256_file

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

CAPTIONS = ["a man is cooking pasta in a kitchen", "dogs",
            " ".join(f"word{i}" for i in range(40))]  # longer than 30 BPE tokens: truncated


@pytest.fixture(scope="module")
def enc():
    # OpenAI's activation, so the TorchScript (OpenAI) archive below loads into the same model
    return create_clip_encoder(model="ViT-B-32-quickgelu", random_init=True, device="cpu", seed=0)


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(enc, images):
    return enc.encode_images(images), enc.encode_texts(CAPTIONS)


def test_refuses_to_build_without_weights():
    with pytest.raises(WeightsError, match="--random-init"):
        create_clip_encoder()


def test_frame_feature_is_cls_after_ln_post_and_proj(enc, images, reference):
    feats, _ = reference
    assert feats.shape == (3, 512) and feats.dtype == torch.float32
    v = enc.model.visual
    with torch.inference_mode():
        x = v.transformer(v._embeds(images))
        manual = v.ln_post(x)[:, 0] @ v.proj
    torch.testing.assert_close(feats, manual, atol=1e-4, rtol=1e-4)


def test_images_deterministic_and_batched_equals_one_by_one(enc, images, reference):
    feats, _ = reference
    torch.testing.assert_close(enc.encode_images(images), feats, atol=0, rtol=0)
    one = torch.cat([enc.encode_images(images[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(one, feats, atol=1e-4, rtol=1e-4)


def test_tokenisation_sot_at_most_30_bpe_eot(enc):
    tok = enc.tokenize(CAPTIONS)
    assert tok.shape == (3, 32)
    sot, eot = 49406, 49407
    assert (tok[:, 0] == sot).all()
    assert tok[2, 31] == eot and (tok[2] != 0).all()  # truncated: EOT kept last
    n = (tok[0] != 0).sum().item()
    assert tok[0, n - 1] == eot and (tok[0, n:] == 0).all()


def test_caption_tokens_masks_and_eot(enc, reference):
    _, out = reference
    tokens, mask, emb = out["caption_tokens"], out["caption_mask"], out["caption_embedding"]
    assert tokens.shape == (3, 32, 512) and mask.shape == (3, 32) and emb.shape == (3, 512)
    tok = enc.tokenize(CAPTIONS)
    eot = tok.argmax(-1)
    for i in range(3):
        k = int(eot[i])
        assert mask[i, :k + 1].all() and not mask[i, k + 1:].any()  # a prefix SOT..EOT
        assert (tokens[i, k + 1:] == 0).all()                        # padding is zero
        assert tokens[i, :k + 1].abs().sum(-1).min() > 0
        torch.testing.assert_close(emb[i], tokens[i, k])
    assert mask.sum(1).tolist() == [int(e) + 1 for e in eot]
    assert mask[2].all()


def test_32_token_tower_equals_clip_77_token_encode_text(enc, reference):
    # with the causal mask the first 32 positions cannot see the rest: same EOT features
    _, out = reference
    tok77 = open_clip.get_tokenizer("ViT-B-32")(CAPTIONS[:2])
    with torch.inference_mode():
        ref = enc.model.encode_text(tok77)
    torch.testing.assert_close(out["caption_embedding"][:2], ref, atol=1e-4, rtol=1e-4)


def test_text_deterministic_and_batched_equals_one_by_one(enc, reference):
    _, out = reference
    again = enc.encode_texts(CAPTIONS)
    for k in out:
        torch.testing.assert_close(again[k], out[k], atol=0, rtol=0)
    one = [enc.encode_texts([c]) for c in CAPTIONS]
    torch.testing.assert_close(torch.cat([o["caption_tokens"] for o in one]), out["caption_tokens"],
                               atol=1e-4, rtol=1e-4)


def test_random_init_provenance(enc):
    rec = enc.provenance()
    assert rec["weights"] == RANDOM_INIT and rec["weights_sha256"] == RANDOM_INIT
    assert rec["preprocessing"]["context_length"] == 32
    assert rec["model"] == "open_clip ViT-B-32-quickgelu"


def _torchscript_archive(state_dict: dict, path) -> None:
    """A TorchScript archive whose state dict has OpenAI's names and extras, like ViT-B-32.pt."""
    root = torch.nn.Module()
    for k, v in state_dict.items():
        *parts, leaf = k.split(".")
        m = root
        for p in parts:
            if not hasattr(m, p):
                m.add_module(p, torch.nn.Module())
            m = getattr(m, p)
        m.register_parameter(leaf, torch.nn.Parameter(v.detach().clone(), requires_grad=False))
    for name, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        root.register_buffer(name, torch.tensor(value))
    torch.jit.script(root).save(str(path))


@pytest.fixture(scope="module")
def checkpoints(enc, tmp_path_factory):
    d = tmp_path_factory.mktemp("clip_ckpt")
    sd = {k: v.detach().clone() for k, v in enc.model.state_dict().items()}
    torch.save(sd, d / "open_clip_pytorch_model.bin")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "open_clip_model.safetensors"))
    _torchscript_archive(sd, d / "ViT-B-32.pt")
    return d


@pytest.mark.parametrize("name,model,fmt", [
    ("open_clip_pytorch_model.bin", "ViT-B-32-quickgelu", "pickle"),
    ("open_clip_model.safetensors", "ViT-B-32-quickgelu", "safetensors"),
    ("ViT-B-32.pt", "ViT-B-32", "torchscript"),  # OpenAI archive: switches to QuickGELU itself
])
def test_weights_from_every_format_reproduce_the_model(checkpoints, images, reference, name, model, fmt):
    feats, out = reference
    path = checkpoints / name
    sha = sha256_file(path)
    loaded = create_clip_encoder(model=model, weights=str(path), expected_sha256=sha, device="cpu")
    assert loaded.arch == "ViT-B-32-quickgelu" and loaded.weights_format == fmt
    torch.testing.assert_close(loaded.encode_images(images), feats, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded.encode_texts(CAPTIONS)["caption_tokens"], out["caption_tokens"],
                               atol=1e-5, rtol=1e-5)
    rec = loaded.provenance()
    assert rec["weights"] == str(path) and rec["weights_sha256"] == sha and rec["weights_format"] == fmt


def test_wrong_sha_and_wrong_architecture_fail_before_work(checkpoints):
    path = checkpoints / "open_clip_pytorch_model.bin"
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        create_clip_encoder(weights=str(path), expected_sha256="ab" * 32, device="cpu")
    with pytest.raises(WeightsError, match=r"does not fit open_clip ViT-B-16.*visual.conv1.weight"):
        create_clip_encoder(model="ViT-B-16", weights=str(path), device="cpu")


def test_vit_b_16_builds_with_the_same_feature_shapes():
    e = create_clip_encoder(ClipEncoderConfig(model="ViT-B-16", random_init=True, device="cpu"))
    assert e.dim == 512 and e.image_size == 224
    assert e.encode_texts(["a cat"])["caption_tokens"].shape == (1, 32, 512)
