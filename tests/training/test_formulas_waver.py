"""WAVER's student formulas against restatements of DRL's code (tvr/models/modeling.py
``wti_interaction`` with ``wti_arch=2`` and ``cdcr=3``, ``agg_video_feat`` with
``seqTransf``; tvr/models/module_cross.py ``ResidualAttentionBlock``), on copied weights:
max abs difference <= 1e-5 in float32."""
import pytest
import torch

from training.heads import create_head
from training.heads.waver import decorrelation_loss
from training.losses import info_nce

from .release_ops import attention, clip_mlp, f64, layer_norm, linear, randomise_norms, unit

TOL = 1e-5
B, W, N, D = 5, 7, 6, 64
PLAIN = {"distill": "none", "text_adapter": False, "n_heads": 4, "max_frames": N, "logit_scale": 1.0}


@pytest.fixture(scope="module")
def batch():
    """Caption tokens and frames share an offset, so every valid cosine is positive: DRL
    multiplies masked entries to 0 before its max, which is then the same as our -inf.
    Padded slots hold values (as CLIP's outputs at padding do): DRL normalises them."""
    g = torch.Generator().manual_seed(0)
    offset = 2 * unit(torch.randn(D, generator=g))
    t_mask = torch.arange(W)[None] < torch.tensor([7, 3, 5, 2, 6])[:, None]
    v_mask = torch.arange(N)[None] < torch.tensor([6, 4, 1, 6, 3])[:, None]
    tokens = offset + torch.randn(B, W, D, generator=g) * 0.15
    frames = offset + torch.randn(B, N, D, generator=g) * 0.15
    assert torch.einsum("atd,bnd->abtn", unit(tokens), unit(frames)).min() > 0
    return {"text_tokens": tokens, "text_mask": t_mask, "frames": frames, "frame_mask": v_mask}


def close(ours, ref):
    assert ours.shape == ref.shape
    assert (f64(ours) - ref).abs().max().item() <= TOL


def weight_branch(x, mask, fc):
    """wti_arch 2: Linear(width, width), ReLU, Linear(width, 1); -inf on padding; softmax."""
    logit = linear(torch.relu(linear(x, fc[0])), fc[2]).squeeze(-1)
    return torch.softmax(logit.masked_fill(~mask, float("-inf")), dim=-1)


def drl_wti(text_feat, text_mask, video_feat, video_mask, head, cdcr_alphas=None):
    """DRL's wti_interaction: the [text, video] logits (no scale), and with
    ``cdcr_alphas`` = (alpha1, alpha2) its cdcr=3 loss over the matching pairs."""
    text_weight = weight_branch(text_feat, text_mask, head.text_weight)
    video_weight = weight_branch(video_feat, video_mask, head.video_weight)
    text_feat, video_feat = unit(text_feat), unit(video_feat)
    logits = torch.einsum("atd,bvd->abtv", text_feat, video_feat)
    logits = torch.einsum("abtv,at->abtv", logits, text_mask.double())
    logits = torch.einsum("abtv,bv->abtv", logits, video_mask.double())
    t2v, max_idx1 = logits.max(dim=-1)
    v2t, max_idx2 = logits.max(dim=-2)
    sim = (torch.einsum("abt,at->ab", t2v, text_weight) + torch.einsum("abv,bv->ab", v2t, video_weight)) / 2
    if cdcr_alphas is None:
        return sim
    b, nt, d = text_feat.shape
    nv = video_feat.shape[1]
    max_idx1 = max_idx1[torch.arange(b), torch.arange(b)]
    max_idx2 = max_idx2[torch.arange(b), torch.arange(b)]
    max_t_feat = text_feat[torch.arange(b).repeat_interleave(nv), max_idx2.flatten()]
    max_v_feat = video_feat[torch.arange(b).repeat_interleave(nt), max_idx1.flatten()]
    t_mask, v_mask = text_mask.flatten(), video_mask.flatten()
    t_feat, v_feat = text_feat.reshape(-1, d)[t_mask], video_feat.reshape(-1, d)[v_mask]
    max_t_feat, max_v_feat = max_t_feat[v_mask], max_v_feat[t_mask]
    text_weight, video_weight = text_weight.flatten()[t_mask], video_weight.flatten()[v_mask]

    def norm(x):
        return (x - x.mean(0)) / x.std(0)

    c1 = torch.einsum("acd,a->cd", torch.einsum("ac,ad->acd", norm(t_feat), norm(max_v_feat)), text_weight) / b
    c2 = torch.einsum("acd,a->cd", torch.einsum("ac,ad->acd", norm(v_feat), norm(max_t_feat)), video_weight) / b
    c = (c1 + c2) / 2.0
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.flatten()[1:].view(d - 1, d + 1)[:, :-1].pow(2).sum()
    return on_diag * cdcr_alphas[0] + off_diag * cdcr_alphas[1]


def drl_temporal_layer(x, mask, layer):
    """ResidualAttentionBlock with seqTransf's additive mask on padded keys."""
    add = ((1.0 - mask.double()[:, None, :]) * -1000000.0).expand(-1, mask.shape[1], -1)
    h = layer_norm(x, layer.ln1)
    x = x + attention(h, h, layer.attn, add)
    return x + clip_mlp(layer_norm(x, layer.ln2), layer.mlp)


def test_wti_weights_have_drls_width_and_scores_match(batch):
    torch.manual_seed(0)
    head = create_head("waver", {**PLAIN, "temporal_layers": 0}, dim=D).eval()
    assert head.text_weight[0].out_features == D and head.video_weight[0].out_features == D
    with torch.no_grad():
        ours = head.similarity(head.encode_text(batch), head.encode_video(batch))
    ref = drl_wti(f64(batch["text_tokens"]), batch["text_mask"], f64(batch["frames"]), batch["frame_mask"], head)
    close(ours, ref)


def test_one_temporal_layer_and_the_seqtransf_skip(batch):
    torch.manual_seed(0)
    head = create_head("waver", {**PLAIN, "temporal_layers": 1}, dim=D).eval()
    randomise_norms(head)
    mask = batch["frame_mask"]
    x = f64(batch["frames"]) + f64(head.temporal_embedding)[:N]
    with torch.no_grad():
        ours = head.temporal[0](x.float(), mask)
        frames = head.encode_video(batch)["frames"]
    ref = drl_temporal_layer(x, mask, head.temporal[0])
    close(ours, ref)
    # agg_video_feat: transformer(F + P) + F, normalised in the interaction
    ref_frames = unit(ref + f64(batch["frames"]))
    close(frames[mask], ref_frames[mask])


@pytest.mark.parametrize("alphas", [(0.14, 0.0), (1.0, 0.06)])
def test_decorrelation_is_drls_cdcr3(batch, alphas):
    torch.manual_seed(0)
    head = create_head("waver", {**PLAIN, "temporal_layers": 0, "drl_lambda": 1.0,
                                 "drl_alpha1": alphas[0], "drl_alpha2": alphas[1]}, dim=D).eval()
    with torch.no_grad():
        t, v = head.encode_text(batch), head.encode_video(batch)
        ours = decorrelation_loss(t["tokens"], t["mask"], t["weights"], v["frames"], v["mask"], v["weights"], *alphas)
        sim = head.similarity(t, v)
        total = head.loss(sim, batch, t, v)
    ref = drl_wti(f64(batch["text_tokens"]), batch["text_mask"], f64(batch["frames"]), batch["frame_mask"], head, alphas)
    close(ours, ref)
    close(total - info_nce(sim), ref)


def test_decorrelation_never_pairs_a_padded_slot(batch):
    """Padded tokens and frames may hold anything (here values far larger than any real
    one): the loss is that of the same inputs with the padding zeroed."""
    t, v = unit(batch["text_tokens"]), unit(batch["frames"])
    tm, vm = batch["text_mask"], batch["frame_mask"]
    wt, wv = tm / tm.sum(1, keepdim=True), vm / vm.sum(1, keepdim=True)
    loud_t = torch.where(tm[..., None], t, 50.0)
    loud_v = torch.where(vm[..., None], v, -50.0)
    quiet_t, quiet_v = t * tm[..., None], v * vm[..., None]
    for alphas in ((1.0, 0.06), (0.0, 1.0)):
        a = decorrelation_loss(loud_t, tm, wt, loud_v, vm, wv, *alphas)
        b = decorrelation_loss(quiet_t, tm, wt, quiet_v, vm, wv, *alphas)
        assert torch.isfinite(a) and float(a) > 0
        close(a, f64(b))


def test_decorrelation_needs_two_valid_tokens_and_two_valid_frames():
    """Standardising over the pairs needs two of each; with fewer the term is exactly 0."""
    g = torch.Generator().manual_seed(1)
    t, v = unit(torch.randn(2, 3, 4, generator=g)), unit(torch.randn(2, 3, 4, generator=g))
    w = torch.full((2, 3), 1 / 3)
    one = torch.tensor([[True, False, False], [False, False, False]])
    two = torch.tensor([[True, False, False], [True, False, False]])
    full = torch.ones(2, 3, dtype=torch.bool)
    for tm, vm in ((one, full), (full, one), (one, one)):
        loss = decorrelation_loss(t, tm, w, v, vm, w, 1.0, 1.0)
        assert loss.shape == () and float(loss) == 0.0
    for tm, vm in ((two, full), (full, two), (two, two)):
        assert float(decorrelation_loss(t, tm, w, v, vm, w, 1.0, 1.0)) > 0
