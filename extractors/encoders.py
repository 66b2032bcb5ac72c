"""The encoder registry: each frozen encoder's name -> a small config of its geometry.

Like open_clip's model configs, this is plain data (no model library is imported), so the
flows can size a store and training can read token layouts without loading a model. The
encoders themselves (``extractors.clip_encoder``, ``extractors.ast_encoder``) build from
these entries.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipGeometry:
    arch: str            # open_clip's architecture name
    embed_dim: int       # width of frame features and caption tokens (after the projections)
    context_length: int = 32  # caption tokens kept: SOT + at most 30 BPE + EOT


@dataclass(frozen=True)
class AstGeometry:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    # the input: a Kaldi fbank of max_length frames x num_mel_bins, cut into patches
    num_mel_bins: int = 128
    max_length: int = 1024
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10
    special_tokens: int = 2   # CLS and distillation, before the patches

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
CLIP_ENCODERS: dict[str, ClipGeometry] = {
    "ViT-B-32": ClipGeometry("ViT-B-32", 512),
    "ViT-B-16": ClipGeometry("ViT-B-16", 512),
    "ViT-B-32-quickgelu": ClipGeometry("ViT-B-32-quickgelu", 512),
    "ViT-B-16-quickgelu": ClipGeometry("ViT-B-16-quickgelu", 512),
}

# AST sizes: "base" is the AudioSet checkpoint's DeiT-base-384 (2 + 12 x 101 = 1214 tokens of
# 768); "tiny" exists for tests and quick demos (random weights only: a weights file brings
# its own geometry) and keeps the token grid.
AST_ENCODERS: dict[str, AstGeometry] = {
    "base": AstGeometry(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "tiny": AstGeometry(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
}


def clip_geometry(name: str) -> ClipGeometry:
    try:
        return CLIP_ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown CLIP model {name!r} (known: {', '.join(CLIP_ENCODERS)})") from None


def ast_geometry(size: str) -> AstGeometry:
    try:
        return AST_ENCODERS[size]
    except KeyError:
        raise ValueError(f"unknown AST size {size!r} (known: {', '.join(AST_ENCODERS)})") from None
