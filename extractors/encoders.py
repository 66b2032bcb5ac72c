"""The encoder registry: each frozen encoder's name -> a small config of its geometry.

The numbers are not written here: CLIP's widths are open_clip's own model configs (the
JSON files it ships, read as data, so sizing a store loads no model library), and the AST's
geometry is transformers' ``ASTConfig`` (the AudioSet checkpoint's DeiT-base-384), read on
first use. The encoders themselves (``extractors.clip_encoder``, ``extractors.ast_encoder``)
build from these entries.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
from dataclasses import dataclass

# CLIP's text context as the store keeps it (SOT + at most 30 BPE + EOT): the releases' choice,
# not CLIP's 77
CONTEXT_LENGTH = 32


@dataclass(frozen=True)
class ClipGeometry:
    arch: str            # open_clip's architecture name
    embed_dim: int       # width of frame features and caption tokens (after the projections)
    context_length: int = CONTEXT_LENGTH


@dataclass(frozen=True)
class AstGeometry:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    # the input: a Kaldi fbank of max_length frames x num_mel_bins, cut into patches
    num_mel_bins: int
    max_length: int
    patch_size: int
    frequency_stride: int
    time_stride: int
    special_tokens: int = 2   # CLS and distillation, before the patches (ASTEmbeddings's)

    @property
    def freq_patches(self) -> int:
        return (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1

    @property
    def time_patches(self) -> int:
        return (self.max_length - self.patch_size) // self.time_stride + 1

    @property
    def n_tokens(self) -> int:
        return self.special_tokens + self.freq_patches * self.time_patches


# Our CLIP names -> open_clip architectures. OpenAI's weights were trained with QuickGELU:
# a TorchScript (OpenAI) archive switches the model to the "-quickgelu" variant.
CLIP_ENCODERS: dict[str, str] = {name: name for name in
                              ("ViT-B-32", "ViT-B-16", "ViT-B-32-quickgelu", "ViT-B-16-quickgelu")}


def open_clip_model_config(arch: str) -> dict:
    """open_clip's config of ``arch`` (what ``open_clip.get_model_config`` returns), read from
    the package's model_configs folder without importing open_clip (and torch)."""
    folder = importlib.util.find_spec("open_clip").submodule_search_locations[0]
    with open(os.path.join(folder, "model_configs", f"{arch}.json"), encoding="utf-8") as f:
        return json.load(f)


@functools.cache
def clip_geometry(name: str) -> ClipGeometry:
    try:
        arch = CLIP_ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown CLIP model {name!r} (known: {', '.join(CLIP_ENCODERS)})") from None
    return ClipGeometry(arch, open_clip_model_config(arch)["embed_dim"])


# AST sizes: "base" is ASTConfig's own (the AudioSet checkpoint's DeiT-base-384: 2 + 12 x 101
# tokens); "tiny" exists for tests and quick demos (random weights only: a weights file brings
# its own geometry), narrower and shallower on the same token grid.
AST_SIZES = ("base", "tiny")
_TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


@functools.cache
def ast_geometry(size: str) -> AstGeometry:
    if size not in AST_SIZES:
        raise ValueError(f"unknown AST size {size!r} (known: {', '.join(AST_SIZES)})")
    from transformers import ASTConfig

    hf = ASTConfig()
    base = AstGeometry(**{f.name: getattr(hf, f.name) for f in dataclasses.fields(AstGeometry)
                          if f.name != "special_tokens"})
    return dataclasses.replace(base, **_TINY) if size == "tiny" else base
