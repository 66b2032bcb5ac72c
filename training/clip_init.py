"""Initialise a head's transformers from CLIP's text transformer, as the releases do.

AVIGATE (its ``modeling.py``, "initialization trick"): the audio resampler's and the gated
fusion's self-attention, MLP and their two LayerNorms start as CLIP text layers 0..L-1,
and the frame positions as CLIP's positional embedding. DRL and WAVER do the same for
the temporal transformer ("seqTransf") and its frame positions. The cross-attentions,
the fusion FFN, the gates, the queries and the audio projection have no CLIP
counterpart and stay random.

Training never opens a checkpoint itself (it may not import the extractors): the
command reads the file the store's provenance names and hands its tensors here as a
plain ``name -> tensor`` dict, with CLIP's own key names
(``transformer.resblocks.N.attn.in_proj_weight``, ``positional_embedding``, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from storage import RANDOM_INIT, read_attrs
from training.runs import ConfigError

# the store groups whose provenance may name the CLIP file, in order of preference: the
# text tower is the one whose layers we copy
CLIP_GROUPS = ("text", "frames")

# our layer's parameter -> CLIP's residual block parameter (same tensor layouts: both
# are nn.MultiheadAttention + Linear, pre-norm)
_BLOCK = {
    "{attn}.in_proj_weight": "attn.in_proj_weight",
    "{attn}.in_proj_bias": "attn.in_proj_bias",
    "{attn}.out_proj.weight": "attn.out_proj.weight",
    "{attn}.out_proj.bias": "attn.out_proj.bias",
    "ln1.weight": "ln_1.weight",
    "ln1.bias": "ln_1.bias",
    "mlp.0.weight": "mlp.c_fc.weight",
    "mlp.0.bias": "mlp.c_fc.bias",
    "mlp.2.weight": "mlp.c_proj.weight",
    "mlp.2.bias": "mlp.c_proj.bias",
    "ln2.weight": "ln_2.weight",
    "ln2.bias": "ln_2.bias",
}

# head module list -> the name of its self-attention inside each layer
_STACKS = {"resampler": "self_attn", "fusion": "self_attn", "temporal": "attn"}
# head parameter of frame positions (rows = frame slots)
_POSITIONS = ("frame_embedding", "temporal_embedding")


@dataclass(frozen=True)
class ClipWeights:
    """A CLIP checkpoint's tensors and the file they came from."""

    path: str
    sha256: str
    state: Mapping[str, torch.Tensor]


def recorded_clip_weights(store: str) -> tuple[str, str] | None:
    """``(file, sha256)`` of the CLIP weights the store's features were made with (its
    ``text`` group's provenance, else ``frames``), or None when they were random
    (``RANDOM-INIT``) or no group records any."""
    prov = read_attrs(store).get("provenance", {})
    for group in CLIP_GROUPS:
        rec = prov.get(group)
        if not rec:
            continue
        if rec.get("weights_sha256") in (None, RANDOM_INIT) or rec.get("weights") in (None, RANDOM_INIT):
            return None
        return str(rec["weights"]), str(rec["weights_sha256"])
    return None


def clip_key_map(head: nn.Module) -> dict[str, str]:
    """Head parameter name -> CLIP key for every tensor the releases copy: layer i of the
    resampler, fusion and temporal stacks from text layer i; frame positions from the
    positional embedding (its first rows)."""
    out = {}
    params = dict(head.named_parameters())
    for stack, attn in _STACKS.items():
        layers = getattr(head, stack, None)
        if not isinstance(layers, nn.ModuleList):
            continue
        for i in range(len(layers)):
            for ours, theirs in _BLOCK.items():
                name = f"{stack}.{i}.{ours.format(attn=attn)}"
                if name not in params:  # a layer whose structure changed: fail, never skip
                    raise ConfigError(f"head {getattr(head, 'name', '?')!r}: no parameter {name} to "
                                      "initialise from CLIP (the key map is out of date)")
                out[name] = f"transformer.resblocks.{i}.{theirs}"
    for pos in _POSITIONS:
        if pos in params:
            out[pos] = "positional_embedding"
    return out


def init_from_clip(head: nn.Module, clip_state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy CLIP's text-transformer tensors into ``head`` (``clip_key_map``); returns the
    names of the head's parameters initialised. Any missing key or shape that does not
    fit raises ``ConfigError`` before anything is copied."""
    mapping = clip_key_map(head)
    params = dict(head.named_parameters())
    plan, problems = [], []
    for ours, theirs in mapping.items():
        if theirs not in clip_state:
            problems.append(f"{theirs} missing")
            continue
        src, dst = clip_state[theirs], params[ours]
        if ours in _POSITIONS:  # CLIP has 77 text positions; the head has one per frame slot
            if src.ndim != 2 or src.shape[0] < dst.shape[0] or src.shape[1] != dst.shape[1]:
                problems.append(f"{theirs} {tuple(src.shape)} cannot fill {ours} {tuple(dst.shape)}")
                continue
            src = src[:dst.shape[0]]
        elif tuple(src.shape) != tuple(dst.shape):
            problems.append(f"{theirs} {tuple(src.shape)} vs {ours} {tuple(dst.shape)}")
            continue
        plan.append((dst, src))
    if problems:
        n_layers = len({k.split(".")[2] for k in clip_state if k.startswith("transformer.resblocks.")})
        raise ConfigError(f"CLIP weights do not fit head {getattr(head, 'name', '?')!r} (CLIP text "
                          f"transformer: {n_layers} layers): {len(problems)} problem(s), e.g. "
                          + "; ".join(problems[:3]))
    with torch.no_grad():
        for dst, src in plan:
            dst.copy_(src.to(dst.dtype))
    return list(mapping)


__all__ = ["CLIP_GROUPS", "ClipWeights", "clip_key_map", "init_from_clip", "recorded_clip_weights"]
