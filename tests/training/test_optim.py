"""Issue 26: ``--optimizer bertadam`` equals a restatement of CLIP4Clip's
``modules/optimization.py`` (BertAdam, 'warmup_cosine'); the releases' decay grouping;
the DDP-averaged clip on one process."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from training.optim import BertAdam, release_groups, warmup_cosine


class ReleaseBertAdam(torch.optim.Optimizer):
    """CLIP4Clip's BertAdam, restated from the release (schedule 'warmup_cosine' only)."""

    def __init__(self, params, lr, warmup, t_total, b1, b2, e, weight_decay, max_grad_norm):
        super().__init__(params, dict(lr=lr, warmup=warmup, t_total=t_total, b1=b1, b2=b2, e=e,
                                      weight_decay=weight_decay, max_grad_norm=max_grad_norm))

    @staticmethod
    def schedule(x, warmup):
        if x < warmup:
            return x / warmup
        return 0.5 * (1.0 + math.cos(math.pi * x))

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p.data)
                    state["next_v"] = torch.zeros_like(p.data)
                next_m, next_v = state["next_m"], state["next_v"]
                beta1, beta2 = group["b1"], group["b2"]
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                next_m.mul_(beta1).add_(grad, alpha=1 - beta1)
                next_v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = next_m / (next_v.sqrt() + group["e"])
                if group["weight_decay"] > 0.0:
                    update += group["weight_decay"] * p.data
                progress = state["step"] / group["t_total"]
                lr_scheduled = group["lr"] * self.schedule(progress, group["warmup"])
                p.data.add_(-lr_scheduled * update)
                state["step"] += 1


def model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))


def run(opt_cls, steps: int = 30, scale_grad: float = 1.0) -> list[torch.Tensor]:
    m = model(0)
    groups = [{"params": [m[0].weight, m[2].weight], "weight_decay": 0.2, "lr": 1e-2},
              {"params": [m[0].bias, m[1].weight, m[1].bias, m[2].bias], "weight_decay": 0.0, "lr": 1e-2}]
    opt = opt_cls(groups, lr=1e-2, warmup=0.1, t_total=steps, b1=0.9, b2=0.98, e=1e-6, weight_decay=0.2,
                  max_grad_norm=1.0)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x = torch.randn(32, 8, generator=g)
        loss = (m(x) ** 2).sum() * scale_grad  # large gradients: the per-tensor clip acts
        opt.zero_grad()
        loss.backward()  # no global clip here: each tensor's own clip inside the step must act
        opt.step()
    return [p.detach().clone() for p in m.parameters()]


def test_bertadam_equals_the_release_restatement():
    ours, theirs = run(BertAdam), run(ReleaseBertAdam)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    # and it is neither torch's AdamW nor a no-op
    start = [p.detach() for p in model(0).parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(ours, start))


def test_bertadam_has_no_bias_correction_and_a_zero_first_rate():
    p = nn.Parameter(torch.ones(3))
    opt = BertAdam([p], lr=0.1, warmup=0.5, t_total=10, weight_decay=0.0, max_grad_norm=-1)
    p.grad = torch.full((3,), 0.5)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3))  # progress 0: rate 0
    p.grad = torch.full((3,), 0.5)
    opt.step()
    m, v = 0.5 * 0.1 + 0.9 * 0.05, 0.25 * 0.02 + 0.98 * 0.005
    step = 0.1 * warmup_cosine(1 / 10, 0.5) * m / (math.sqrt(v) + 1e-6)  # no 1/(1 - b^t)
    assert p.detach()[0].item() == pytest.approx(1 - step, rel=1e-6)


def test_schedule_is_cosine_over_total_progress():
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    # after warm-up the cosine runs on x itself: at x = 0.5 it is 0.5, not the post-warm-up 0.56
    assert warmup_cosine(0.5, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(0.1, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))


def test_release_grouping_decays_everything_but_biases():
    m = nn.Module()
    m.ln_1 = nn.LayerNorm(4)
    m.fc = nn.Linear(4, 4)
    m.queries = nn.Parameter(torch.zeros(2, 4))
    groups = release_groups(m, [{"params": list(m.parameters()), "lr": 1.0, "group": "all"}], 0.2)
    by = {g["group"]: {id(p) for p in g["params"]} for g in groups}
    assert by["all+decay"] == {id(m.ln_1.weight), id(m.fc.weight), id(m.queries)}
    assert by["all+no_decay"] == {id(m.ln_1.bias), id(m.fc.bias)}


def test_grad_clip_scale_is_the_ddp_average():
    """The releases gather the embeddings before a loss over the whole batch; each GPU's
    gradient flows through its own samples only and DDP averages them. That average is
    the one-process gradient divided by the number of GPUs: what grad_clip_scale = N
    hands the clip and the optimiser (training.optim.ddp_average_)."""
    from training.optim import ddp_average_

    torch.manual_seed(0)
    enc = nn.Linear(8, 4)
    x, y = torch.randn(8, 8), torch.randn(8, 4)

    def loss_of(e_x):
        sim = e_x @ y.t()
        return torch.nn.functional.cross_entropy(sim, torch.arange(8))

    n_gpus = 4
    per_gpu = []
    for r in range(n_gpus):
        local = slice(2 * r, 2 * r + 2)
        e = enc(x).detach()
        e[local] = enc(x[local])  # the all-gather: other GPUs' rows carry no gradient here
        per_gpu.append(torch.autograd.grad(loss_of(e), list(enc.parameters())))
    ddp = [torch.stack(gs).mean(0) for gs in zip(*per_gpu)]

    enc.zero_grad()
    loss_of(enc(x)).backward()
    ddp_average_(enc.parameters(), n_gpus)
    for p, want in zip(enc.parameters(), ddp):
        assert torch.allclose(p.grad, want, atol=1e-7)
