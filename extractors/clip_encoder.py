"""Frozen CLIP (open_clip): per-frame image embeddings and per-caption token features.

* frames: the CLS token after ``ln_post`` and ``proj`` (what ``encode_image`` returns for
  open_clip's ViTs with token pooling), D = 512;
* captions: CLIP's tokenisation cut to 32 tokens (SOT + at most 30 BPE + EOT), the text
  tower run on a 32-token context (positional embedding and causal mask sliced to 32:
  with a causal mask the first 32 outputs do not depend on later positions, so this equals
  the 77-token tower on those positions), then ``ln_final`` and ``text_projection`` at
  EVERY position; the mask covers SOT..EOT and the padded positions are zero.

Weights come from local files only (see ``extractors.weights``); open_clip builds the
architecture with ``pretrained=None`` and never reaches the network.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, replace
import torch

from extractors.device import autocast, select_device
from extractors.encoders import CLIP_ENCODERS, CONTEXT_LENGTH
from extractors.weights import load_state_dict, load_strict, require_weights, strip_prefix
from storage.provenance import provenance_record

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Our names -> open_clip architecture names (the registry's entries).
CLIP_MODELS: dict[str, str] = CLIP_ENCODERS
# Extra entries of OpenAI's state dicts that are not parameters.
_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class ClipEncoderConfig:
    model: str = "ViT-B-32"
    weights: str | None = None          # .pt (OpenAI TorchScript), .bin/.pth, .safetensors
    random_init: bool = False
    expected_sha256: str | None = None
    device: str = "auto"
    precision: str = "fp16"             # autocast dtype on CUDA; the CPU always runs fp32
    context_length: int = CONTEXT_LENGTH
    channels_last: bool = True          # NHWC input to the patch conv (faster on CUDA)
    seed: int = 0                       # random-init only


class ClipEncoder:
    """A frozen open_clip model plus the feature conventions of the store."""

    def __init__(self, config: ClipEncoderConfig):
        import open_clip

        require_weights(config.weights, config.random_init, f"CLIP {config.model}", "--clip-weights")
        if config.model not in CLIP_MODELS:
            raise ValueError(f"unknown CLIP model {config.model!r} (known: {', '.join(CLIP_MODELS)})")
        if not 3 <= config.context_length <= 77:
            raise ValueError("context_length must be in 3..77")
        self.device = select_device(config.device)
        ckpt = None
        arch = CLIP_MODELS[config.model]
        if config.weights is not None:
            ckpt = load_state_dict(config.weights, config.expected_sha256)
            if ckpt.format == "torchscript" and not arch.endswith("-quickgelu"):
                arch += "-quickgelu"
        self.config = config
        self.arch = arch
        if config.random_init:
            torch.manual_seed(config.seed)
        # open_clip logs "No pretrained weights loaded" for pretrained=None even when the
        # weights are loaded below; the provenance says RANDOM-INIT where that is true
        quiet = _DropNotice("No pretrained weights loaded")
        logging.getLogger().addFilter(quiet)
        try:
            model = open_clip.create_model(arch, pretrained=None, device="cpu")
        finally:
            logging.getLogger().removeFilter(quiet)
        self.weights_sha256 = None
        self.weights_format = None
        if ckpt is not None:
            sd = strip_prefix(ckpt.state_dict, "module.")
            for k in _OPENAI_EXTRAS:
                sd.pop(k, None)
            load_strict(model, sd, ckpt.path, f"open_clip {arch}")
            self.weights_sha256, self.weights_format = ckpt.sha256, ckpt.format
        model.float().eval().requires_grad_(False)
        self.model = model.to(self.device)
        if config.channels_last:
            self.model.visual.conv1.to(memory_format=torch.channels_last)
        self.tokenizer = open_clip.get_tokenizer(arch, context_length=config.context_length)
        ctx = config.context_length
        self._attn_mask = None if self.model.attn_mask is None else self.model.attn_mask[:ctx, :ctx]
        self.image_size = int(_to_int(self.model.visual.image_size))
        self.dim = int(self.model.text_projection.shape[1])
        v = self.model.visual
        # hidden-state geometry (issue 26, ``extractors.clip_hidden``)
        self.visual_tokens = int(v.positional_embedding.shape[0])
        self.visual_width = int(v.transformer.width)
        self.text_width = int(self.model.transformer.width)
        self.depth = {"visual": len(v.transformer.resblocks), "text": len(self.model.transformer.resblocks)}

    # --- images ----------------------------------------------------------------------
    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised ``[B, 3, H, W]`` -> ``[B, D]`` float32 (CLS after ln_post @ proj)."""
        x = images.to(self.device, non_blocking=True)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.config.precision):
            out = self.model.encode_image(x)
        return out.float()

    @torch.inference_mode()
    def encode_images_hidden(self, images: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode_images`` plus the visual tokens entering the last ``k`` blocks,
        ``[B, k, tokens, width]`` float16, top block first (``clip_hidden.stack_top_first``)."""
        from extractors.clip_hidden import block_inputs, stack_top_first

        with block_inputs(self.model.visual.transformer, k) as states:
            feats = self.encode_images(images)
        return feats, stack_top_first(states)

    # --- text ------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """``[B, context_length]`` token ids; truncation keeps EOT last (open_clip's tokenizer)."""
        return self.tokenizer(list(texts))

    @torch.inference_mode()
    def encode_tokens(self, tokens: torch.Tensor, hidden_layers: int = 0) -> dict[str, torch.Tensor]:
        """Token ids ``[B, L]`` -> ``caption_tokens [B, L, D]`` (zero past EOT),
        ``caption_mask [B, L]`` (SOT..EOT) and ``caption_embedding [B, D]`` (EOT), float32.
        ``hidden_layers`` K > 0 adds ``caption_hidden_j [B, L, width]`` float16 for j = 1..K:
        the text tokens entering block L - j (every word slot)."""
        if hidden_layers:
            from extractors.clip_hidden import block_inputs

            with block_inputs(self.model.transformer, hidden_layers) as states:
                out = self.encode_tokens(tokens)
            return {**out, **{f"caption_hidden_{j}": states[hidden_layers - j] for j in range(1, hidden_layers + 1)}}
        m = self.model
        tokens = tokens.to(self.device)
        n = tokens.shape[1]
        if n > self.config.context_length:
            raise ValueError(f"{n} tokens, the encoder takes {self.config.context_length}")
        with autocast(self.device, self.config.precision):
            cast = m.transformer.get_cast_dtype()
            x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:n].to(cast)
            mask = None if self._attn_mask is None else self._attn_mask[:n, :n]
            x = m.transformer(x, attn_mask=mask)
            x = m.ln_final(x)
            x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
        x = x.float()
        # CLIP's EOT id is the largest in the vocabulary, as open_clip's argmax pooling assumes
        eot = tokens.argmax(dim=-1)
        pos = torch.arange(n, device=tokens.device)
        valid = pos[None, :] <= eot[:, None]
        x = x * valid[..., None]
        emb = x[torch.arange(x.shape[0], device=x.device), eot]
        return {"caption_tokens": x, "caption_mask": valid, "caption_embedding": emb}

    def encode_texts(self, texts: list[str], hidden_layers: int = 0) -> dict[str, torch.Tensor]:
        return self.encode_tokens(self.tokenize(texts), hidden_layers)

    # --- record ----------------------------------------------------------------------
    def provenance(self, **extra) -> dict:
        mean = [float(v) for v in _stat(self.model.visual, "image_mean", (0.48145466, 0.4578275, 0.40821073))]
        std = [float(v) for v in _stat(self.model.visual, "image_std", (0.26862954, 0.26130258, 0.27577711))]
        pre = {"image_size": self.image_size, "image_mean": mean, "image_std": std,
               "frame_feature": "CLS after ln_post @ proj",
               "context_length": self.config.context_length,
               "caption_tokens": "ln_final @ text_projection at every position, SOT..EOT masked",
               "precision": "fp16-autocast" if self.device.type == "cuda" and self.config.precision == "fp16"
               else "fp32"}
        cfg = {k: v for k, v in asdict(self.config).items() if k not in ("weights", "expected_sha256")}
        return provenance_record(f"open_clip {self.arch}", self.config.weights, self.weights_sha256, pre,
                                 weights_format=self.weights_format, config=cfg, **extra)


class _DropNotice(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _stat(visual: torch.nn.Module, name: str, default: tuple) -> tuple:
    v = getattr(visual, name, None)
    return tuple(v) if v is not None else default


def _to_int(size) -> int:
    return size[0] if isinstance(size, (tuple, list)) else size


def create_clip_encoder(config: ClipEncoderConfig | None = None, **kw) -> ClipEncoder:
    """The one way to build a CLIP encoder: ``create_clip_encoder(model="ViT-B-16", weights=...)``."""
    config = replace(config or ClipEncoderConfig(), **kw)
    return ClipEncoder(config)
