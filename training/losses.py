"""Contrastive losses over a [n_text, n_video] similarity of matching pairs (diagonal)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(sim: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: mean of the text->video and video->text cross-entropies.

    ``sim`` already carries the logit scale.
    """
    target = torch.arange(sim.shape[0], device=sim.device)
    sim = sim.float()
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target)) / 2


@torch.no_grad()
def adaptive_margins(text: torch.Tensor, video: torch.Tensor, lam: float = 0.2,
                     delta: float = 0.1) -> torch.Tensor:
    """AVIGATE's margins m[i, j] = min(lam * (1 - (c_t + c_v) / 2), delta), m[i, i] = 0.

    ``text`` and ``video`` are frozen (CLIP-space) embeddings; they are normalised here
    and no gradient flows through the margins. Pairs that look alike get small margins,
    unrelated pairs at most ``delta``.
    """
    t = F.normalize(text.float(), dim=-1)
    v = F.normalize(video.float(), dim=-1)
    m = (lam * (1 - (t @ t.t() + v @ v.t()) / 2)).clamp(max=delta)
    return m.fill_diagonal_(0)


def adaptive_margin_loss(sim: torch.Tensor, margins: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Symmetric cross-entropy over ``sim + logit_scale * margins``: negatives are pushed
    further than the positive by a pair-dependent margin."""
    return info_nce(sim.float() + logit_scale * margins)
