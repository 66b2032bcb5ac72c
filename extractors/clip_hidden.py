"""CLIP's hidden states entering its last K residual blocks (issue 26), captured with
forward pre-hooks during the usual forward, so the features computed alongside are those
of the unhooked model, bit for bit.

Each state is batch-first ``[B, tokens, width]`` whatever open_clip's internal layout
(``Transformer.batch_first``), cast to float16 on the device.
"""
from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

import torch
from torch import nn


def block_indices(transformer: nn.Module, k: int) -> list[int]:
    """Indices of the last ``k`` residual blocks, bottom first."""
    n = len(transformer.resblocks)
    if not 1 <= k <= n:
        raise ValueError(f"cannot keep the inputs of the last {k} blocks of a {n}-block tower")
    return list(range(n - k, n))


@contextmanager
def block_inputs(transformer: nn.Module, k: int) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward of ``transformer`` appends the inputs of its last
    ``k`` blocks (bottom first) to the yielded list."""
    batch_first = getattr(transformer, "batch_first", True)
    out: list[torch.Tensor] = []

    def hook(_module, args):
        x = args[0]
        out.append((x if batch_first else x.transpose(0, 1)).to(torch.float16))

    handles = [transformer.resblocks[i].register_forward_pre_hook(hook) for i in block_indices(transformer, k)]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def stack_top_first(states: list[torch.Tensor]) -> torch.Tensor:
    """``[B, K, tokens, width]`` with index j - 1 holding the input of block L - j (the
    store's ``*_hidden_j``): the captured list reversed."""
    return torch.stack(states[::-1], dim=1)
