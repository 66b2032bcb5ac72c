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


def _nested(f: dataclasses.Field) -> type | None:
    """The config class of a nested config field (one built by ``default_factory``)."""
    return f.default_factory if dataclasses.is_dataclass(f.default_factory) else None


def _option_path(cls: type, key: str) -> tuple[str, ...] | None:
    """Field names from ``cls`` down to the field ``key`` sets, or None.

    ``key`` is dotted (``audio.fusion_layers``) or flat. A flat key that is no field of
    ``cls`` reaches a nested config ``name`` as ``key`` or as ``key`` less the ``name_``
    prefix, so the names from before the nesting still work (``fusion_layers``,
    ``audio_dim`` -> ``audio.dim``).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    first, _, rest = key.partition(".")
    if first in fields:
        sub = _nested(fields[first])
        if not rest:
            return (first,)
        tail = _option_path(sub, rest) if sub else None
        return (first, *tail) if tail else None
    if rest:
        return None
    for name, f in fields.items():
        sub = _nested(f)
        if sub is None:
            continue
        sub_fields = {g.name for g in dataclasses.fields(sub)}
        for k in (key, key[len(name) + 1:] if key.startswith(name + "_") else None):
            if k in sub_fields:
                return (name, k)
    return None


def _option_names(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        sub = _nested(f)
        out += _option_names(sub, f"{prefix}{f.name}.") if sub else [prefix + f.name]
    return out


def head_option(name: str, key: str) -> str | None:
    """The dotted option ``key`` sets on head ``name`` (flat names resolved), or None
    when the head has no such option."""
    path = _option_path(_head_class(name).Config, key)
    return ".".join(path) if path else None


def head_options(name: str) -> list[str]:
    """Every option of head ``name``, nested ones dotted (``audio.fusion_layers``)."""
    return _option_names(_head_class(name).Config)


def _build(cls: type, values: dict[tuple[str, ...], Any]):
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        sub = _nested(f)
        if sub is not None:
            inner = {p[1:]: v for p, v in values.items() if p[0] == f.name and len(p) > 1}
            if (f.name,) in values:  # a whole nested config, as a saved run stores it
                inner = {**{(k,): v for k, v in dict(values[(f.name,)]).items()}, **inner}
            if inner:
                kw[f.name] = _build(sub, inner)
        elif (f.name,) in values:
            kw[f.name] = values[(f.name,)]
    config = cls(**kw)
    _check_layer_counts(config)
    return config


# layer counts where 0 means "none of these layers" (WAVER's temporal transformer)
OPTIONAL_LAYERS = ("temporal_layers",)


def _check_layer_counts(config) -> None:
    """Layer counts are whole numbers >= 1 (>= 0 for ``OPTIONAL_LAYERS``)."""
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if not f.name.endswith("_layers"):
            continue
        floor = 0 if f.name in OPTIONAL_LAYERS else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < floor:
            raise ValueError(f"{f.name} must be a whole number >= {floor}, got {v!r}")


def head_config(name: str, overrides: dict[str, Any] | None = None, **dims: int):
    """The head's config with ``overrides`` applied; ``dims`` (dim, audio_dim, ...) are the
    store's sizes and fill options of the same name.

    Keys are option names as ``head_option`` resolves them (dotted, or flat); a nested
    config may also come whole, as a dict (``dataclasses.asdict`` of a saved config).
    """
    cls = _head_class(name).Config
    values: dict[tuple[str, ...], Any] = {}
    for k, v in dims.items():
        path = _option_path(cls, k)
        if path:
            values[path] = v
    unknown = []
    for k, v in (overrides or {}).items():
        path = _option_path(cls, k)
        if path is None:
            unknown.append(k)
        else:
            values[path] = v
    if unknown:
        raise KeyError(f"head {name!r} has no option(s) {sorted(unknown)} "
                       f"(options: {', '.join(sorted(head_options(name)))})")
    return _build(cls, values)


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

    def index_vectors(self, video_repr) -> torch.Tensor:
        """[n_video, D]: one vector per video whose inner product with a query's vector
        proposes search candidates (re-scored by ``similarity``). Default: the video
        representation itself, when it is a tensor."""
        if not isinstance(video_repr, torch.Tensor):
            raise NotImplementedError(f"head {self.name!r} gives no index vector")
        return video_repr

    def extra_metrics(self) -> dict[str, float]:
        """Scalars worth logging per epoch (e.g. gate values); none by default."""
        return {}
