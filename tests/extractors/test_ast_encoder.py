"""AST tokens (tiny width/depth, real 128 x 1024 geometry -> 1214 tokens) and strict weight
loading from the original AudioSet checkpoint naming and from Hugging Face directories."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from extractors.ast_encoder import AstEncoderConfig, create_ast_encoder
from extractors.weights import WeightsError
from storage.provenance import RANDOM_INIT, sha256_file

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, device="cpu")


@pytest.fixture(scope="module")
def source():
    """A random tiny AST whose every tensor differs from any default initialisation."""
    enc = create_ast_encoder(random_init=True, seed=3, **TINY)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in enc.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return enc


@pytest.fixture(scope="module")
def fbank():
    return torch.randn(3, 1024, 128, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(source, fbank):
    return source.encode(fbank)


def test_refuses_to_build_without_weights():
    with pytest.raises(WeightsError, match="--ast-weights PATH, or --random-init"):
        create_ast_encoder(**TINY)


def test_all_tokens_after_the_final_layernorm(source, fbank, reference):
    assert reference.shape == (3, 1214, 64) and source.n_tokens == 1214
    m = source.model
    with torch.inference_mode():
        h = m.embeddings(fbank)
        for layer in m.layers:
            h = layer(h, None)
        manual = torch.nn.functional.layer_norm(h, (64,), m.layernorm.weight, m.layernorm.bias,
                                                m.config.layer_norm_eps)
    torch.testing.assert_close(reference, manual, atol=1e-5, rtol=1e-5)


def test_deterministic_and_batched_equals_one_by_one(source, fbank, reference):
    torch.testing.assert_close(source.encode(fbank), reference, atol=0, rtol=0)
    one = torch.cat([source.encode(fbank[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(one, reference, atol=1e-4, rtol=1e-4)


def test_wrong_input_geometry():
    e = create_ast_encoder(random_init=True, **TINY)
    with pytest.raises(ValueError, match=r"takes \(1024, 128\)"):
        e.encode(torch.zeros(1, 1000, 128))


def test_provenance_records_the_front_end(source):
    rec = source.provenance()
    assert rec["weights_sha256"] == RANDOM_INIT
    pre = rec["preprocessing"]
    assert (pre["fbank_shift"], pre["fbank_mean"], pre["fbank_std"]) == ("fixed-10ms", -4.2677393, 4.5689974)
    release = create_ast_encoder(random_init=True, fbank_shift="fit-1024", fbank_mean=-5.118,
                                 fbank_std=3.2527153, **TINY)
    assert release.provenance()["preprocessing"]["fbank_shift"] == "fit-1024"
    assert release.config.fbank_config().mean == -5.118


# --- the original AudioSet checkpoint ------------------------------------------------------
def _to_audioset_naming(sd: dict, prefix: str = "module.") -> dict:
    """Written independently of the loader: HF names -> timm DeiT names as saved by AST's
    training script (DataParallel), plus the heads that the loader must ignore."""
    out = {}
    top = {"embeddings.cls_token": "v.cls_token", "embeddings.distillation_token": "v.dist_token",
           "embeddings.position_embeddings": "v.pos_embed",
           "embeddings.patch_embeddings.projection.weight": "v.patch_embed.proj.weight",
           "embeddings.patch_embeddings.projection.bias": "v.patch_embed.proj.bias",
           "layernorm.weight": "v.norm.weight", "layernorm.bias": "v.norm.bias"}
    for k, v in top.items():
        out[prefix + v] = sd[k]
    n_layers = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    for i in range(n_layers):
        a = f"layers.{i}."
        b = f"{prefix}v.blocks.{i}."
        for kind in ("weight", "bias"):
            out[b + f"attn.qkv.{kind}"] = torch.cat([sd[a + f"attention.{p}_proj.{kind}"] for p in "qkv"])
            for theirs, ours in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                                 ("attn.proj", "attention.o_proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                out[b + f"{theirs}.{kind}"] = sd[a + f"{ours}.{kind}"]
    hidden = sd["layernorm.weight"].shape[0]
    out[prefix + "v.head.weight"] = torch.randn(1000, hidden)
    out[prefix + "v.head.bias"] = torch.randn(1000)
    out[prefix + "v.head_dist.weight"] = torch.randn(1000, hidden)
    out[prefix + "v.head_dist.bias"] = torch.randn(1000)
    out[prefix + "mlp_head.0.weight"] = torch.randn(hidden)
    out[prefix + "mlp_head.0.bias"] = torch.randn(hidden)
    out[prefix + "mlp_head.1.weight"] = torch.randn(527, hidden)
    out[prefix + "mlp_head.1.bias"] = torch.randn(527)
    return out


@pytest.fixture(scope="module")
def audioset_pth(source, tmp_path_factory):
    p = tmp_path_factory.mktemp("ast") / "audioset_10_10_0.4593.pth"
    torch.save(_to_audioset_naming(source.model.state_dict()), p)
    return p


def test_audioset_checkpoint_changes_every_weight(source, audioset_pth, fbank, reference):
    from transformers import ASTModel

    loaded = create_ast_encoder(weights=str(audioset_pth), layer_norm_eps=1e-12, **TINY)
    fresh = ASTModel(loaded.model.config)  # what the model holds when nothing is loaded
    want, got, before = source.model.state_dict(), loaded.model.state_dict(), fresh.state_dict()
    assert set(got) == set(want)
    for k in got:
        assert not torch.equal(got[k], before[k]), f"{k} was not loaded"
        assert torch.equal(got[k], want[k]), k
    torch.testing.assert_close(loaded.encode(fbank), reference, atol=1e-5, rtol=1e-5)
    rec = loaded.provenance()
    assert rec["weights_sha256"] == sha256_file(audioset_pth) and rec["weights_format"] == "audioset-pth"
    assert "module.mlp_head.1.weight" in rec["ignored_keys"] and "module.v.head_dist.bias" in rec["ignored_keys"]


def test_audioset_default_eps_is_timms(audioset_pth):
    assert create_ast_encoder(weights=str(audioset_pth), **TINY).model.config.layer_norm_eps == 1e-6


def test_audioset_missing_unexpected_and_wrong_architecture(source, tmp_path):
    sd = _to_audioset_naming(source.model.state_dict())
    missing = dict(sd)
    del missing["module.v.blocks.1.norm2.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing keys \[1\]: layers.1.layernorm_after.weight"):
        create_ast_encoder(weights=str(tmp_path / "missing.pth"), **TINY)
    extra = dict(sd, **{"module.v.blocks.0.attn.rel_pos": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"unexpected keys .*module.v.blocks.0.attn.rel_pos|v.blocks.0.attn.rel_pos"):
        create_ast_encoder(weights=str(tmp_path / "extra.pth"), **TINY)
    torch.save(sd, tmp_path / "ok.pth")
    wider = dict(TINY, hidden_size=32, intermediate_size=64)
    with pytest.raises(WeightsError, match=r"does not fit ASTModel.*shape mismatches"):
        create_ast_encoder(weights=str(tmp_path / "ok.pth"), **wider)
    # the AVIGATE mistake in reverse: HF names in a .pth are not silently skipped
    torch.save(source.model.state_dict(), tmp_path / "hf_names.pth")
    with pytest.raises(WeightsError, match="unexpected keys for an AudioSet AST checkpoint"):
        create_ast_encoder(weights=str(tmp_path / "hf_names.pth"), **TINY)


# --- Hugging Face directories -------------------------------------------------------------
def _legacy_hf_names(sd: dict) -> dict:
    """transformers < 5 names of ASTForAudioClassification (the MIT/ast-finetuned-* files)."""
    ren = [("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
           ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
           ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]
    out = {}
    for k, v in sd.items():
        if k.startswith("layers."):
            k = "encoder.layer." + k[len("layers."):]
            for a, b in ren:
                k = k.replace(a, b)
        out["audio_spectrogram_transformer." + k] = v
    hidden = sd["layernorm.weight"].shape[0]
    out["classifier.layernorm.weight"] = torch.ones(hidden)
    out["classifier.layernorm.bias"] = torch.zeros(hidden)
    out["classifier.dense.weight"] = torch.zeros(527, hidden)
    out["classifier.dense.bias"] = torch.zeros(527)
    return out


def test_hf_directory_current_naming(source, fbank, reference, tmp_path):
    source.model.save_pretrained(tmp_path / "hf")
    loaded = create_ast_encoder(weights=str(tmp_path / "hf"), device="cpu")  # geometry from config.json
    assert loaded.config.hidden_size == 64 and loaded.weights_format == "hf-dir"
    torch.testing.assert_close(loaded.encode(fbank), reference, atol=1e-5, rtol=1e-5)


def test_hf_directory_legacy_naming_and_sha(source, fbank, reference, tmp_path):
    d = tmp_path / "ast-finetuned-audioset-10-10-0.4593"
    d.mkdir()
    cfg = source.model.config.to_dict()
    cfg["model_type"] = "audio-spectrogram-transformer"
    (d / "config.json").write_text(json.dumps(cfg))
    sd = {k: v.contiguous() for k, v in _legacy_hf_names(source.model.state_dict()).items()}
    save_file(sd, str(d / "model.safetensors"))
    loaded = create_ast_encoder(weights=str(d), device="cpu",
                                expected_sha256=sha256_file(d / "model.safetensors"))
    torch.testing.assert_close(loaded.encode(fbank), reference, atol=1e-5, rtol=1e-5)
    assert "classifier.dense.weight" in loaded.ignored_keys
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        create_ast_encoder(weights=str(d), expected_sha256="0" * 64, device="cpu")
    (d / "model.safetensors").unlink()
    torch.save(sd, d / "pytorch_model.bin")  # the older HF file name, read with weights_only
    from_bin = create_ast_encoder(weights=str(d), device="cpu")
    assert from_bin.weights_sha256 == sha256_file(d / "pytorch_model.bin")
    torch.testing.assert_close(from_bin.encode(fbank), reference, atol=1e-5, rtol=1e-5)
    (d / "pytorch_model.bin").unlink()
    with pytest.raises(WeightsError, match="no model.safetensors or pytorch_model.bin"):
        create_ast_encoder(AstEncoderConfig(weights=str(d), device="cpu"))
