import torch

from training.losses import adaptive_margin_loss, adaptive_margins, info_nce


def test_info_nce_symmetric_and_perfect():
    sim = torch.eye(4) * 100
    assert info_nce(sim) < 1e-6
    s = torch.randn(5, 5)
    ce = torch.nn.functional.cross_entropy
    t = torch.arange(5)
    assert torch.allclose(info_nce(s), (ce(s, t) + ce(s.t(), t)) / 2)


def test_margins_bounded_zero_diagonal_and_frozen():
    t = torch.randn(6, 8, requires_grad=True)
    v = torch.randn(6, 8, requires_grad=True)
    m = adaptive_margins(t, v, lam=0.2, delta=0.1)
    assert not m.requires_grad
    assert (m.diagonal() == 0).all() and (m <= 0.1 + 1e-7).all() and (m >= 0).all()
    # identical pairs get no margin: lam * (1 - 1) = 0
    same = torch.randn(1, 8).repeat(3, 1)
    assert adaptive_margins(same, same).abs().max() < 1e-6
    # the margin only makes negatives harder: the loss grows
    sim = torch.randn(6, 6) * 5
    assert adaptive_margin_loss(sim, m, 100.0) > info_nce(sim)
