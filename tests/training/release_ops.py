"""Plain-torch restatements of the releases' building blocks (AVIGATE, DRL), for the
formula tests. Written from reading the release code; float64, weights read from our
modules so both sides compute with the same numbers."""
from __future__ import annotations

import torch


def f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double()


def layer_norm(x, m):
    """The releases' TF-style LayerNorm, eps 1e-12 inside the square root."""
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    return f64(m.weight) * (x - u) / torch.sqrt(s + 1e-12) + f64(m.bias)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def linear(x, lin, bias: bool = True):
    out = x @ f64(lin.weight).t()
    return out + f64(lin.bias) if bias else out


def clip_mlp(x, seq, bias: bool = True):
    """c_fc, QuickGELU, c_proj."""
    return linear(quick_gelu(linear(x, seq[0], bias)), seq[2], bias)


def attention(q_in, kv_in, m, add_mask=None):
    """nn.MultiheadAttention's maths (batch first) with the releases' additive mask
    ``add_mask`` [B, Lq, Lk] (0 kept, -1e6 masked)."""
    b, lq, d = q_in.shape
    h = m.num_heads
    wq, wk, wv = f64(m.in_proj_weight).chunk(3)
    bq, bk, bv = f64(m.in_proj_bias).chunk(3)

    def heads(x):
        return x.reshape(b, -1, h, d // h).transpose(1, 2)

    q, k, v = heads(q_in @ wq.t() + bq), heads(kv_in @ wk.t() + bk), heads(kv_in @ wv.t() + bv)
    a = q @ k.transpose(-1, -2) / (d // h) ** 0.5
    if add_mask is not None:
        a = a + add_mask[:, None]
    o = (a.softmax(-1) @ v).transpose(1, 2).reshape(b, lq, d)
    return linear(o, m.out_proj)


def unit(x, dim=-1):
    return x / x.norm(dim=dim, keepdim=True)


def randomise_norms(module: torch.nn.Module, seed: int = 0) -> None:
    """LayerNorm gains and biases away from 1 and 0, so a swapped norm shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
