"""The releases' optimiser (issue 26): BertAdam as CLIP4Clip's ``modules/optimization.py``
writes it, which AVIGATE and WAVER (via DRL) both use, and their weight-decay grouping.

* Adam WITHOUT bias correction: ``m/(sqrt(v) + eps)`` from the first step on;
* each tensor's gradient clipped to norm ``max_grad_norm`` inside the step (on top of the
  training loop's global clip);
* decoupled weight decay, ``update += wd * p``, scaled by the learning rate;
* the learning rate ``lr * warmup_cosine(step / t_total)``: linear warm-up over the first
  ``warmup`` fraction, then ``0.5 (1 + cos(pi x))`` with x the progress over ALL steps
  (not the post-warm-up steps), where ``step`` counts the tensor's earlier updates, so the
  very first update has rate 0.

Grouping (``release_groups``): the releases decay every parameter whose name holds none
of ``bias``, ``LayerNorm.bias``, ``LayerNorm.weight`` (so CLIP's ``ln_*`` gains and the
embeddings ARE decayed), each group keeping its learning rate.

DDP clipping on one process: the releases clip the gradient DDP has averaged over their
GPUs (AVIGATE 4, WAVER 2). They gather the embeddings before the loss, so each GPU's
gradient of a per-sample parameter (all of CLIP, the heads up to the gather) is the full
batch loss's gradient through that GPU's samples; the average is the full gradient / N.
``TrainConfig.grad_clip_scale = N`` divides the gradient by N before the clip and the
step: the same clip (threshold 1 on grad / N = threshold N on the full gradient), the same
per-tensor clip and the same Adam steps (eps included) as the release.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

# the releases' ``no_decay`` name fragments (CLIP4Clip, AVIGATE and WAVER prep_optimizer)
NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
OPTIMIZERS = ("adamw", "bertadam")


def warmup_cosine(x: float, warmup: float) -> float:
    """CLIP4Clip's schedule: ``x`` is the progress over all steps."""
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


class BertAdam(torch.optim.Optimizer):
    """See the module doc. ``t_total`` <= 0: a constant learning rate."""

    def __init__(self, params: Iterable, lr: float, warmup: float = 0.1, t_total: int = -1, b1: float = 0.9,
                 b2: float = 0.98, e: float = 1e-6, weight_decay: float = 0.2, max_grad_norm: float = 1.0):
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup is a fraction in [0, 1), got {warmup}")
        super().__init__(params, dict(lr=lr, warmup=warmup, t_total=t_total, b1=b1, b2=b2, e=e,
                                      weight_decay=weight_decay, max_grad_norm=max_grad_norm))

    def scheduled_lr(self, group: dict, step: int) -> float:
        if group["t_total"] <= 0:
            return group["lr"]
        return group["lr"] * warmup_cosine(step / group["t_total"], group["warmup"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                m, v = state["next_m"], state["next_v"]
                m.mul_(group["b1"]).add_(grad, alpha=1 - group["b1"])
                v.mul_(group["b2"]).addcmul_(grad, grad, value=1 - group["b2"])
                update = m / (v.sqrt() + group["e"])
                if group["weight_decay"] > 0.0:
                    update += group["weight_decay"] * p
                p.add_(-self.scheduled_lr(group, state["step"]) * update)
                state["step"] += 1
        return loss


def ddp_average_(params: Iterable[torch.Tensor], n: float) -> None:
    """Divide the gradients by ``n`` in place: the releases' DDP average over ``n`` GPUs
    (module doc); ``n`` = 1 leaves them untouched."""
    if n == 1.0:
        return
    for p in params:
        if p.grad is not None:
            p.grad.div_(n)


def release_groups(model: nn.Module, groups: list[dict], weight_decay: float) -> list[dict]:
    """``groups`` (each with its ``lr``) re-split by the releases' decay rule (module doc)."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for g in groups:
        decay = [p for p in g["params"] if not any(nd in names[id(p)] for nd in NO_DECAY)]
        rest = [p for p in g["params"] if any(nd in names[id(p)] for nd in NO_DECAY)]
        label = g.get("group", "")
        out += [{**g, "params": decay, "weight_decay": weight_decay, "group": label + "+decay"}] if decay else []
        out += [{**g, "params": rest, "weight_decay": 0.0, "group": label + "+no_decay"}] if rest else []
    return out


__all__ = ["BertAdam", "NO_DECAY", "OPTIMIZERS", "ddp_average_", "release_groups", "warmup_cosine"]
