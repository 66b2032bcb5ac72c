"""AVIGATE's formulas against restatements of the release's code (modules/modeling.py
``_loose_similarity_audio_group`` and ``_LSE_real``, modules/module_cross.py
``ResidualAttentionBlock_Text`` (the audio resampler) and ``ResidualAttentionBlock_Gate``
(the gated fusion)), on copied weights: max abs difference <= 1e-5 in float32."""
import pytest
import torch
import torch.nn.functional as F

from training.heads import create_head

from .release_ops import attention, clip_mlp, f64, layer_norm, linear, quick_gelu, randomise_norms, unit

TOL = 1e-5
B, N, Q, T, D, DA = 5, 6, 4, 7, 64, 32
OPTIONS = {"audio.resampler_layers": 1, "audio.fusion_layers": 1, "audio.queries": Q, "audio.gate_hidden": 32,
           "n_heads": 4, "max_frames": N, "logit_scale": 10.0, "tau": 0.5}


@pytest.fixture(scope="module")
def head():
    torch.manual_seed(0)
    h = create_head("avigate", OPTIONS, dim=D, audio_dim=DA).eval()
    randomise_norms(h)
    with torch.no_grad():  # open the gates (they start closed) so audio flows
        for layer in h.fusion:
            for gate in (layer.gate_mha, layer.gate_ffn):
                torch.nn.init.normal_(gate.w2.weight, std=0.5)
    return h


@pytest.fixture(scope="module")
def batch():
    """Two clusters of videos whose captions and frames are alike, so margins fall below
    delta inside a cluster and reach it across; unit-norm features as CLIP's are small."""
    g = torch.Generator().manual_seed(1)
    cluster = torch.tensor([0, 0, 0, 1, 1])
    centre = torch.randn(2, D, generator=g)
    text = unit(centre[cluster] + 0.3 * torch.randn(B, D, generator=g))
    frames = unit(centre[cluster][:, None] + 0.8 * torch.randn(B, N, D, generator=g)) * 0.5
    mask = torch.arange(N)[None] < torch.tensor([6, 4, 6, 1, 5])[:, None]
    return {"text": text, "frames": frames * mask[..., None], "frame_mask": mask,
            "audio": unit(torch.randn(B, T, DA, generator=g)), "has_audio": torch.ones(B, dtype=torch.bool)}


def close(ours, ref):
    assert ours.shape == ref.shape
    assert (f64(ours) - ref).abs().max().item() <= TOL


# --- the release's blocks, restated -------------------------------------------------
def release_resampler_layer(x, v, layer):
    """ResidualAttentionBlock_Text: self-attention, cross-attention to ln_3(audio), MLP."""
    h = layer_norm(x, layer.ln1)
    x = x + attention(h, h, layer.self_attn)
    x = x + attention(layer_norm(x, layer.ln3), layer_norm(v, layer.ln3), layer.cross_attn)
    return x + clip_mlp(layer_norm(x, layer.ln2), layer.mlp)


def release_gate(u, gate):
    """attn_gate / ff_gate: tanh(W2 QuickGELU(W1 u)), no biases."""
    return torch.tanh(linear(quick_gelu(linear(u, gate.w1, bias=False)), gate.w2, bias=False))


def release_fusion_layer(x, v, layer):
    """ResidualAttentionBlock_Gate (all frames valid: the release averages every slot)."""
    u = torch.cat([x.mean(1), v.mean(1)], dim=-1)
    g_attn, g_ff = release_gate(u, layer.gate_mha), release_gate(u, layer.gate_ffn)  # [B, 1]
    x = x + attention(layer_norm(x, layer.ln3), v, layer.cross_attn) * g_attn[:, None]
    x = x + clip_mlp(layer_norm(x, layer.ln4), layer.ffn, bias=False) * g_ff[:, None]  # cross_ff: bias=False
    h = layer_norm(x, layer.ln1)
    x = x + attention(h, h, layer.self_attn)
    return x + clip_mlp(layer_norm(x, layer.ln2), layer.mlp), g_attn, g_ff


def release_queries(head):
    return f64(head.queries + head.query_embedding)[None].expand(B, -1, -1)


def release_similarity(text, fused, mask, scale, lam):
    """S = (s_l + s_g) / 2 with _LSE_real (raw exp: fine in float64 at these scales)."""
    t = unit(f64(text))
    v = unit(fused)
    m = mask.double()
    g = unit((v * m[..., None]).sum(1) / m.sum(1, keepdim=True))
    s_g = t @ g.t() * scale
    x = torch.einsum("td,vnd->tvn", t, v) * scale
    s_l = torch.log((torch.exp(x * lam) * m[None]).sum(-1)) / lam
    return (s_l + s_g) / 2


def release_margins(text, frames_pos, mask, beta, delta):
    t = unit(f64(text))
    m = mask.double()[..., None]
    vg = unit((unit(frames_pos) * m).sum(1) / m.sum(1))
    return torch.clamp((1 - (t @ t.t() + vg @ vg.t()) * 0.5) * beta, max=delta).fill_diagonal_(0)


def cross_en(logits):
    return -torch.diag(torch.log_softmax(logits, dim=-1)).mean()


# --- the tests ----------------------------------------------------------------------------
def test_one_resampler_layer(head, batch):
    a = head.audio_proj(batch["audio"])
    q = (head.queries + head.query_embedding)[None].expand(B, -1, -1)
    with torch.no_grad():
        ours = head.resampler[0](q, a, torch.ones(B))
    close(ours, release_resampler_layer(release_queries(head), f64(a), head.resampler[0]))


def test_one_fusion_layer(head, batch):
    g = torch.Generator().manual_seed(2)
    x = f64(batch["frames"]) + f64(torch.randn(B, N, D, generator=g)) * 0.3
    v = f64(torch.randn(B, Q, D, generator=g))
    full = torch.ones(B, N, dtype=torch.bool)
    with torch.no_grad():
        ours, _, _ = head.fusion[0](x.float(), full, v.float(), v.float().mean(1), torch.ones(B))
    close(ours, release_fusion_layer(x, v, head.fusion[0])[0])


def test_gate_is_tanh_of_quickgelu_mlp_of_mean_frame_and_mean_query(head, batch):
    g = torch.Generator().manual_seed(3)
    x = f64(torch.randn(B, N, D, generator=g))
    v = f64(torch.randn(B, Q, D, generator=g))
    full = torch.ones(B, N, dtype=torch.bool)
    with torch.no_grad():
        _, g_mha, g_ffn = head.fusion[0](x.float(), full, v.float(), v.float().mean(1), torch.ones(B))
    _, ref_attn, ref_ff = release_fusion_layer(x, v, head.fusion[0])
    close(g_mha, ref_attn)
    close(g_ffn, ref_ff)
    assert ref_attn.abs().min() > 1e-3  # the gates are open: the test sees them


def test_audio_gated_frames_chain_resampler_fusion_and_mix(head, batch):
    full = torch.ones(B, N, dtype=torch.bool)
    with torch.no_grad():
        ours, f0 = head.audio_gated_frames(batch["frames"], full, batch["audio"], batch["has_audio"])
    x0 = f64(batch["frames"]) + f64(head.frame_embedding)[:N]
    qa = release_resampler_layer(release_queries(head), linear(f64(batch["audio"]), head.audio_proj), head.resampler[0])
    fused = release_fusion_layer(x0, qa, head.fusion[0])[0]
    close(f0, x0)
    close(ours, 0.05 * fused + 0.95 * x0)


def test_global_plus_local_similarity_with_masked_logsumexp(head, batch):
    with torch.no_grad():
        ours = head.similarity(head.encode_text(batch), head.encode_video(batch))
        fused, _ = head.audio_gated_frames(batch["frames"], batch["frame_mask"], batch["audio"], batch["has_audio"])
    close(ours, release_similarity(batch["text"], f64(fused), batch["frame_mask"], 10.0, 0.5))


def test_margin_at_logit_scale_100_stays_finite(batch):
    """The release's raw exp overflows float32 at CLIP's scale; the masked logsumexp does not."""
    torch.manual_seed(0)
    h = create_head("avigate", {**OPTIONS, "logit_scale": 100.0, "tau": 1.0}, dim=D, audio_dim=DA).eval()
    with torch.no_grad():
        s = h.similarity(h.encode_text(batch), h.encode_video(batch))
        fused, _ = h.audio_gated_frames(batch["frames"], batch["frame_mask"], batch["audio"], batch["has_audio"])
    assert torch.isfinite(s).all()
    ref = release_similarity(batch["text"], f64(fused), batch["frame_mask"], 100.0, 1.0)
    assert (f64(s) - ref).abs().max().item() <= 1e-4  # float32 at magnitude 100


def test_adaptive_margins_and_loss(head, batch):
    t, v = head.encode_text(batch), head.encode_video(batch)
    sim = head.similarity(t, v)
    with torch.no_grad():
        loss = head.loss(sim, batch, t, v)
        from training.losses import adaptive_margins
        ours_m = adaptive_margins(batch["text"], v["frozen"], 0.2, 0.1)
    frames_pos = f64(batch["frames"]) + f64(head.frame_embedding)[:N]
    m = release_margins(batch["text"], frames_pos, batch["frame_mask"], 0.2, 0.1)
    assert 0 < m[0, 1] < 0.1 and m[0, 4] == pytest.approx(0.1)  # both sides of the clamp are seen
    close(ours_m, m)
    logits = f64(sim) + m * 10.0
    close(loss, (cross_en(logits) + cross_en(logits.t())) / 2)


def test_gates_average_only_the_valid_frame_slots(head, batch):
    """Our fix to the release (it averaged every slot): with the gates open and partial
    masks, u = [mean of the valid frames; mean query]."""
    g = torch.Generator().manual_seed(4)
    x = f64(torch.randn(B, N, D, generator=g))
    v = f64(torch.randn(B, Q, D, generator=g))
    mask = batch["frame_mask"]
    assert not mask.all() and mask.any(1).all()
    with torch.no_grad():
        _, g_mha, g_ffn = head.fusion[0](x.float(), mask, v.float(), v.float().mean(1), torch.ones(B))
    m = mask.double()[..., None]
    u = torch.cat([(x * m).sum(1) / m.sum(1), v.mean(1)], dim=-1)
    close(g_mha, release_gate(u, head.fusion[0].gate_mha))
    close(g_ffn, release_gate(u, head.fusion[0].gate_ffn))
    assert g_mha.abs().min() > 1e-3


@pytest.mark.parametrize("name", ["avigate", "avigate+waver"])
def test_padded_frame_slots_never_reach_the_video(name, batch):
    """Whatever a padded slot holds, the valid slots of the fused frames, the gates and
    (avigate) the video's pooled vectors stay the same."""
    torch.manual_seed(0)
    options = {k: v for k, v in OPTIONS.items() if k not in ("logit_scale", "tau")}
    h = create_head(name, options, dim=D, audio_dim=DA).eval()
    with torch.no_grad():
        for layer in h.fusion:
            for gate in (layer.gate_mha, layer.gate_ffn):
                torch.nn.init.normal_(gate.w2.weight, std=0.5)
    g = torch.Generator().manual_seed(5)
    valid = batch["frame_mask"]
    noisy = dict(batch, frames=torch.where(valid[..., None], batch["frames"], 5 * torch.randn(B, N, D, generator=g)))
    out = []
    with torch.no_grad():
        for b in (batch, noisy):
            fused, _ = h.audio_gated_frames(b["frames"], valid, b["audio"], b["has_audio"])
            out.append((fused[valid], dict(h._gates), h.encode_video(b) if name == "avigate" else {}))
    (clean, gates, video), (dirty, dirty_gates, dirty_video) = out
    assert gates["gate_mha_abs"] > 1e-3 and gates == pytest.approx(dirty_gates, abs=1e-6)
    torch.testing.assert_close(clean, dirty, atol=1e-5, rtol=0)
    for key in ("global", "frozen"):
        if video:
            torch.testing.assert_close(video[key], dirty_video[key], atol=1e-5, rtol=0)
