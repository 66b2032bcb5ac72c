"""Frozen AST (``transformers.ASTModel``): every last-layer token after the final LayerNorm.

Input: normalised log-mel fbank ``[B, max_length, num_mel_bins]`` (1024 x 128). Output:
``[B, 2 + F*T, hidden]`` = 2 special tokens (CLS, distillation) + 12 x 101 = 1212 patch
tokens, 768 wide, for the DeiT-base-384 geometry (16x16 patches, stride 10 both axes).
``ASTModel.last_hidden_state`` is already after ``layernorm`` (transformers 5.23).

Two weight formats, both loaded strictly through an explicit key mapping:

* a Hugging Face directory (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``), in the current naming or the pre-5.0 naming of
  ``MIT/ast-finetuned-audioset-10-10-0.4593`` (``audio_spectrogram_transformer.encoder.layer.N
  .attention.attention.query`` ...);
* the original AudioSet checkpoint ``audioset_10_10_0.4593.pth``: a DataParallel state
  dict of timm's DeiT (``module.v.blocks.N.attn.qkv`` ...). The fused qkv is split into
  query/key/value. The AVIGATE release loaded it with ``strict=False`` into an unwrapped
  model, so no key matched and its AST stayed random: here every model key must be
  filled and every file key used or explicitly ignored (classifier heads only).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from extractors.device import autocast, select_device
from extractors.encoders import AstGeometry, ast_geometry
from extractors.fbank import FbankConfig
from extractors.weights import (Checkpoint, WeightsError, load_state_dict, load_strict, require_weights,
                                verify_sha256)
from storage.provenance import provenance_record

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Keys of the original checkpoint that are classifier heads, not the backbone we keep.
AUDIOSET_IGNORED = (r"^mlp_head\.", r"^v\.head\.", r"^v\.head_dist\.")
# Same for Hugging Face ASTForAudioClassification checkpoints.
HF_IGNORED = (r"^classifier\.",)
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


_BASE = ast_geometry("base")  # transformers' ASTConfig


@dataclass(frozen=True)
class AstEncoderConfig:
    weights: str | None = None          # HF directory, or audioset_10_10_0.4593.pth
    random_init: bool = False
    expected_sha256: str | None = None
    device: str = "auto"
    precision: str = "fp16"
    # Geometry for random init and the original checkpoint (an HF directory brings its
    # own config.json). Tests shrink width/depth but keep 128 x 1024 -> 1214 tokens.
    hidden_size: int = _BASE.hidden_size
    num_hidden_layers: int = _BASE.num_hidden_layers
    num_attention_heads: int = _BASE.num_attention_heads
    intermediate_size: int = _BASE.intermediate_size
    num_mel_bins: int = _BASE.num_mel_bins
    max_length: int = _BASE.max_length
    patch_size: int = _BASE.patch_size
    frequency_stride: int = _BASE.frequency_stride
    time_stride: int = _BASE.time_stride
    # None: 1e-6 for the original checkpoint (timm's DeiT), the config's value otherwise
    layer_norm_eps: float | None = None
    # front end, recorded in the provenance and used to build extractors.fbank.FbankConfig
    fbank_shift: str = FbankConfig.shift
    fbank_mean: float = FbankConfig.mean
    fbank_std: float = FbankConfig.std
    seed: int = 0                       # random-init only

    def fbank_config(self):
        return FbankConfig(shift=self.fbank_shift, num_mel_bins=self.num_mel_bins,
                           target_frames=self.max_length, mean=self.fbank_mean, std=self.fbank_std)

    def geometry(self) -> AstGeometry:
        return AstGeometry(**{k: getattr(self, k) for k in AstGeometry.__dataclass_fields__ if k != "special_tokens"})

    def n_tokens(self) -> int:
        return self.geometry().n_tokens


def _hf_config(cfg: AstEncoderConfig, eps: float):
    from transformers import ASTConfig
    return ASTConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                     num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
                     num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length, patch_size=cfg.patch_size,
                     frequency_stride=cfg.frequency_stride, time_stride=cfg.time_stride,
                     layer_norm_eps=eps, hidden_act="gelu", qkv_bias=True)


# --- key mappings -------------------------------------------------------------------------
_AUDIOSET_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_AUDIOSET_TOP = {
    "v.cls_token": "embeddings.cls_token",
    "v.dist_token": "embeddings.distillation_token",
    "v.pos_embed": "embeddings.position_embeddings",
    "v.patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "v.patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "v.norm.weight": "layernorm.weight",
    "v.norm.bias": "layernorm.bias",
}


def map_audioset_keys(sd: dict[str, torch.Tensor], path: str | os.PathLike
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Original AST (timm DeiT, DataParallel) names -> ``ASTModel`` names.

    Returns the mapped dict and the ignored classifier keys. Unknown keys raise.
    """
    out: dict[str, torch.Tensor] = {}
    ignored, unknown = [], []
    block = re.compile(r"^v\.blocks\.(\d+)\.(.+)\.(weight|bias)$")
    for name, v in sd.items():
        k = name[len("module."):] if name.startswith("module.") else name
        if any(re.match(p, k) for p in AUDIOSET_IGNORED):
            ignored.append(name)
            continue
        if k in _AUDIOSET_TOP:
            out[_AUDIOSET_TOP[k]] = v
            continue
        m = block.match(k)
        if m is None:
            unknown.append(name)
            continue
        i, sub, kind = m.groups()
        if sub == "attn.qkv":
            if v.shape[0] % 3:
                raise WeightsError(path, f"{name}: fused qkv of {v.shape[0]} rows is not 3 equal parts")
            for part, t in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                out[f"layers.{i}.attention.{part}.{kind}"] = t.clone()
        elif sub in _AUDIOSET_BLOCK:
            out[f"layers.{i}.{_AUDIOSET_BLOCK[sub]}.{kind}"] = v
        else:
            unknown.append(name)
    if unknown:
        raise WeightsError(path, f"unexpected keys for an AudioSet AST checkpoint [{len(unknown)}]: "
                                 f"{', '.join(sorted(unknown)[:6])}")
    return out, sorted(ignored)


# Pre-5.0 transformers names (the published HF checkpoints) -> current names.
_HF_LEGACY = [
    (r"^audio_spectrogram_transformer\.", ""),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"layers.\1.attention.q_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"layers.\1.attention.k_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"layers.\1.attention.v_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention.o_proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.", r"layers.\1."),
]


def map_hf_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """HF ``ASTModel``/``ASTForAudioClassification`` names (old or new) -> ``ASTModel`` names."""
    out, ignored = {}, []
    for k, v in sd.items():
        if any(re.match(p, k) for p in HF_IGNORED):
            ignored.append(k)
            continue
        for pat, rep in _HF_LEGACY:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out, sorted(ignored)


def _hf_weight_file(d: Path) -> Path:
    for name in HF_WEIGHT_FILES:
        if (d / name).is_file():
            return d / name
    raise WeightsError(d, f"no {' or '.join(HF_WEIGHT_FILES)} in this Hugging Face directory "
                          "(sharded checkpoints are not supported)")


class AstEncoder:
    """A frozen ``ASTModel`` with strictly loaded weights."""

    def __init__(self, config: AstEncoderConfig):
        from transformers import ASTModel
        from transformers.utils import logging as hf_logging

        require_weights(config.weights, config.random_init, "AST", "--ast-weights")
        self.device = select_device(config.device)
        self.weights_sha256 = self.weights_format = None
        self.ignored_keys: list[str] = []
        ckpt: Checkpoint | None = None
        weights = Path(config.weights) if config.weights else None
        if weights is not None and weights.is_dir():
            cfg_file = weights / "config.json"
            if not cfg_file.is_file():
                raise WeightsError(weights, "a Hugging Face AST directory needs config.json")
            try:
                hf_cfg = json.loads(cfg_file.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise WeightsError(cfg_file, f"unreadable config: {e}") from None
            if hf_cfg.get("model_type") not in (None, "audio-spectrogram-transformer"):
                raise WeightsError(cfg_file, f"model_type {hf_cfg.get('model_type')!r} is not an AST")
            fields = {k: hf_cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                             "intermediate_size", "num_mel_bins", "max_length",
                                             "patch_size", "frequency_stride", "time_stride") if k in hf_cfg}
            eps = config.layer_norm_eps or float(hf_cfg.get("layer_norm_eps", 1e-12))
            config = replace(config, layer_norm_eps=eps, **fields)
            file = _hf_weight_file(weights)
            if config.expected_sha256:
                verify_sha256(file, config.expected_sha256)
            ckpt = load_state_dict(file)
            sd, self.ignored_keys = map_hf_keys(ckpt.state_dict)
            fmt = "hf-dir"
        elif weights is not None:
            ckpt = load_state_dict(weights, config.expected_sha256)
            sd, self.ignored_keys = map_audioset_keys(ckpt.state_dict, weights)
            config = replace(config, layer_norm_eps=config.layer_norm_eps or 1e-6)
            fmt = "audioset-pth"
        else:
            config = replace(config, layer_norm_eps=config.layer_norm_eps or 1e-12)
        self.config = config
        if config.random_init:
            torch.manual_seed(config.seed)
        # transformers warns about "newly initialised" weights on construction: the strict
        # load below is the real check
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model = ASTModel(_hf_config(config, config.layer_norm_eps))
        finally:
            hf_logging.set_verbosity(verbosity)
        if config.random_init:
            _randomise_zero_inits(model, config.seed)
        if ckpt is not None:
            load_strict(model, sd, ckpt.path, f"ASTModel(hidden={config.hidden_size}, "
                                              f"layers={config.num_hidden_layers}, tokens={config.n_tokens()})")
            self.weights_sha256, self.weights_format = ckpt.sha256, fmt
        self.model = model.float().eval().requires_grad_(False).to(self.device)
        self.n_tokens = config.n_tokens()
        self.dim = config.hidden_size

    @torch.inference_mode()
    def encode(self, fbank: torch.Tensor) -> torch.Tensor:
        """``[B, max_length, num_mel_bins]`` -> ``[B, n_tokens, hidden]`` float32."""
        c = self.config
        if tuple(fbank.shape[1:]) != (c.max_length, c.num_mel_bins):
            raise ValueError(f"fbank of shape {tuple(fbank.shape[1:])}, the AST takes "
                             f"({c.max_length}, {c.num_mel_bins})")
        x = fbank.to(self.device, non_blocking=True)
        with autocast(self.device, c.precision):
            out = self.model(input_values=x).last_hidden_state
        return out.float()

    def provenance(self, **extra) -> dict:
        c = self.config
        pre = {"fbank_shift": c.fbank_shift, "fbank_mean": c.fbank_mean, "fbank_std": c.fbank_std,
               "num_mel_bins": c.num_mel_bins, "target_frames": c.max_length,
               "tokens": f"{self.n_tokens} last-layer tokens (CLS, distillation, patches) after final LayerNorm",
               "precision": "fp16-autocast" if self.device.type == "cuda" and c.precision == "fp16" else "fp32"}
        cfg = {k: v for k, v in asdict(c).items() if k not in ("weights", "expected_sha256")}
        return provenance_record("transformers ASTModel", c.weights, self.weights_sha256, pre,
                                 weights_format=self.weights_format, ignored_keys=self.ignored_keys,
                                 config=cfg, **extra)


def _randomise_zero_inits(model: torch.nn.Module, seed: int) -> None:
    """HF zero-initialises the CLS/distillation tokens and position embeddings; random-init
    demos want every token distinct, so those get small random values instead."""
    g = torch.Generator().manual_seed(seed)
    emb = model.embeddings
    with torch.no_grad():
        for p in (emb.cls_token, emb.distillation_token, emb.position_embeddings):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def create_ast_encoder(config: AstEncoderConfig | None = None, **kw) -> AstEncoder:
    """The one way to build an AST encoder: ``create_ast_encoder(weights="audioset_10_10_0.4593.pth")``."""
    return AstEncoder(replace(config or AstEncoderConfig(), **kw))
