"""Small layers the heads share."""
from __future__ import annotations

import torch
from torch import nn

# The AVIGATE and DRL releases build their transformers from a TF-style LayerNorm with
# eps 1e-12 (torch's default is 1e-5): with the same weights, one layer differs by up to
# 9e-3 otherwise.
RELEASE_LN_EPS = 1e-12


class QuickGELU(nn.Module):
    """CLIP's GELU approximation, x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def mlp(dim: int, hidden: int, bias: bool = True) -> nn.Sequential:
    """CLIP's transformer MLP: Linear, QuickGELU, Linear back to ``dim``."""
    return nn.Sequential(nn.Linear(dim, hidden, bias=bias), QuickGELU(), nn.Linear(hidden, dim, bias=bias))


def layer_norm(dim: int) -> nn.LayerNorm:
    """The releases' transformer LayerNorm."""
    return nn.LayerNorm(dim, eps=RELEASE_LN_EPS)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``x`` [B, N, D] where ``mask`` [B, N] is True (>= 1 kept)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)
