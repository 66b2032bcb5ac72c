"""The training step the benchmarks time: the trainer's step without AMP or a schedule, so a
ratio compares data paths, not optimiser settings."""
from __future__ import annotations

import torch


def plain_step(head: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, grad_clip: float = 1.0) -> None:
    t, v = head.encode_text(batch), head.encode_video(batch)
    loss = head.loss(head.similarity(t, v), batch, t, v)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(head.parameters(), grad_clip)
    opt.step()
