"""Encoder geometry is read from the libraries' own configs (open_clip's model configs,
transformers' ASTConfig), and the widths written below the encoders (the store's default
layout, the heads' defaults) are held to them."""
from __future__ import annotations

import dataclasses

import open_clip
import pytest
from transformers import ASTConfig
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import ASTEmbeddings

from extractors.encoders import CLIP_ENCODERS, ast_geometry, clip_geometry
from extractors.fbank import FbankConfig
from flows.config import ExtractConfig
from storage.schema import StoreLayout
from training.heads import head_config


@pytest.mark.parametrize("name", sorted(CLIP_ENCODERS))
def test_clip_widths_are_open_clips(name):
    g = clip_geometry(name)
    assert g.embed_dim == open_clip.get_model_config(g.arch)["embed_dim"]


def test_ast_geometry_is_astconfigs_and_its_token_grid_the_models():
    base, hf = ast_geometry("base"), ASTConfig()
    for f in dataclasses.fields(base):
        if f.name != "special_tokens":
            assert getattr(base, f.name) == getattr(hf, f.name), f.name
    assert (base.freq_patches, base.time_patches) == ASTEmbeddings(hf).get_shape(hf)
    tiny = ast_geometry("tiny")
    assert tiny.n_tokens == base.n_tokens and tiny.hidden_size < base.hidden_size
    with pytest.raises(ValueError, match="unknown AST size 'huge'"):
        ast_geometry("huge")
    # the fbank front end's defaults (`vtr media fbank`; the encoder passes its own) are the AST's input
    fb = FbankConfig()
    assert (fb.num_mel_bins, fb.target_frames) == (base.num_mel_bins, base.max_length)


def test_default_store_and_heads_have_the_default_encoders_widths():
    cfg = ExtractConfig()
    clip, ast = clip_geometry(cfg.clip_model), ast_geometry(cfg.ast_size)
    lay = StoreLayout(n_videos=1, n_captions=1)
    assert (lay.dim, lay.n_audio_tokens, lay.audio_dim) == (clip.embed_dim, ast.n_tokens, ast.hidden_size)
    assert (lay.audio_special_tokens, lay.audio_freq_patches, lay.audio_time_patches) == \
        (ast.special_tokens, ast.freq_patches, ast.time_patches)
    for head in ("meanpool", "avigate", "waver"):
        assert head_config(head).dim == clip.embed_dim, head
    assert head_config("avigate").audio.dim == ast.hidden_size
