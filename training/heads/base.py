"""The head interface and its registry."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from training.losses import info_nce

HEADS: dict[str, type["Head"]] = {}


def register_head(name: str):
    """Class decorator: ``@register_head("meanpool")`` on a ``Head`` with a ``Config``."""
    def deco(cls: type["Head"]) -> type["Head"]:
        if name in HEADS:
            raise ValueError(f"head {name!r} registered twice")
        cls.name = name
        HEADS[name] = cls
        return cls
    return deco


def _head_class(name: str) -> type["Head"]:
    try:
        return HEADS[name]
    except KeyError:
        raise KeyError(f"unknown head {name!r} (known: {', '.join(sorted(HEADS))})") from None


def head_config(name: str, overrides: dict[str, Any] | None = None, **dims: int):
    """The head's config with ``overrides`` applied; ``dims`` (dim, audio_dim, ...) are the
    store's sizes and fill fields of the same name."""
    cls = _head_class(name).Config
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides or {}) - fields
    if unknown:
        raise KeyError(f"head {name!r} has no option(s) {sorted(unknown)} (options: {', '.join(sorted(fields))})")
    kw = {k: v for k, v in dims.items() if k in fields}
    kw.update(overrides or {})
    return cls(**kw)


def create_head(name: str, config: Any = None, **dims: int) -> "Head":
    """Build head ``name`` from a config object, a dict of overrides, or the defaults."""
    cls = _head_class(name)
    if not isinstance(config, cls.Config):
        config = head_config(name, config, **dims)
    return cls(config)


class Head(nn.Module):
    """Base class: subclasses define ``Config`` (a dataclass), ``text_fields`` and
    ``video_fields`` (the batch keys they read) and the three encoders below."""

    name: ClassVar[str]
    Config: ClassVar[type]
    text_fields: ClassVar[tuple[str, ...]] = ("text",)
    video_fields: ClassVar[tuple[str, ...]] = ("frames", "frame_mask")
    # batch keys only ``loss`` reads (a teacher's): loaded for training, never at evaluation
    loss_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config):
        super().__init__()
        self.config = config

    def encode_text(self, batch: dict[str, torch.Tensor]):
        raise NotImplementedError

    def encode_video(self, batch: dict[str, torch.Tensor]):
        """Once per video, never sees text (so evaluation caches it)."""
        raise NotImplementedError

    def similarity(self, text_repr, video_repr) -> torch.Tensor:
        """[n_text, n_video] logits (logit scale included)."""
        raise NotImplementedError

    def loss(self, sim: torch.Tensor, batch: dict[str, torch.Tensor], text_repr, video_repr) -> torch.Tensor:
        """Training loss of one batch whose i-th caption belongs to its i-th video."""
        return info_nce(sim)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups. Default: no decay on biases, norms, gains and embeddings (1-D
        tensors and parameters named ``*_embedding``/``queries``), as CLIP does."""
        decay, no_decay = [], []
        for n, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or n.endswith(("embedding", "queries")) else decay).append(p)
        return [g for g in ({"params": decay, "lr": lr, "weight_decay": weight_decay, "group": "decay"},
                            {"params": no_decay, "lr": lr, "weight_decay": 0.0, "group": "no_decay"})
                if g["params"]]

    def extra_metrics(self) -> dict[str, float]:
        """Scalars worth logging per epoch (e.g. gate values); none by default."""
        return {}
