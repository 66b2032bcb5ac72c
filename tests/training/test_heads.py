import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from training.heads import HEADS, create_head, head_config, head_option, head_options

from .conftest import TINY_AVIGATE


def batch(b=6, n=12, d=64, t=8, da=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, 1:] = False
    return {"text": torch.randn(b, d, generator=g), "frames": torch.randn(b, n, d, generator=g) * mask[..., None],
            "frame_mask": mask, "audio": torch.randn(b, t, da, generator=g),
            "has_audio": torch.tensor([True, False, True, True, False, True][:b])}


def scores(head, b):
    head.eval()
    with torch.no_grad():
        return head.similarity(head.encode_text(b), head.encode_video(b))


def test_registry_and_config_errors():
    assert {"meanpool", "avigate"} <= set(HEADS)
    assert head_config("avigate", {"audio.fusion_layers": 2}, dim=64).audio.fusion_layers == 2
    with pytest.raises(KeyError, match="no option.*audio.fusion_layers"):  # names the valid keys
        head_config("avigate", {"nope": 1})
    with pytest.raises(KeyError, match="no option"):
        head_config("avigate", {"audio.nope": 1})
    with pytest.raises(KeyError, match="no option"):  # a plain option has no sub-options
        head_config("avigate", {"n_heads.x": 1})


def test_nested_audio_options_dotted_flat_and_saved():
    """Both AVIGATE heads share one audio config: dotted keys, the flat names from before
    the nesting, the store's sizes and a saved (nested) config all reach it."""
    for name in ("avigate", "avigate+waver"):
        c = head_config(name, {"fusion_layers": 2, "audio.mix": 0.1, "audio_zero_fill": True},
                        dim=64, audio_dim=32)
        assert (c.audio.fusion_layers, c.audio.mix, c.audio.zero_fill, c.audio.dim) == (2, 0.1, True, 32)
        assert head_config(name, dataclasses.asdict(c)) == c
        assert "audio.resampler_layers" in head_options(name)
        assert head_option(name, "query_lr_scale") == "audio.query_lr_scale"
    assert head_option("waver", "fusion_layers") is None and head_option("meanpool", "dim") == "dim"


def test_index_vectors():
    b = batch()
    for name, ov in (("meanpool", None), ("avigate", TINY_AVIGATE)):
        head = create_head(name, ov, dim=64, audio_dim=32).eval()
        with torch.no_grad():
            rep = head.encode_video(b)
            v = head.index_vectors(rep)
            assert v.shape == (6, 64)
            # a video's index vector scores its exact copy highest
            assert torch.equal((v @ v.t()).argmax(1), torch.arange(6))
    with pytest.raises(KeyError, match="unknown head"):
        create_head("nope")
    # the default serves tensor representations; a head with richer ones must say which vector
    from training.heads.base import Head
    with pytest.raises(NotImplementedError, match=r"^head 'meanpool' gives no index vector$"):
        Head.index_vectors(create_head("meanpool", dim=64), {"frames": torch.zeros(1, 2, 64)})


def test_untrained_meanpool_is_zero_shot_clip():
    b = batch()
    head = create_head("meanpool", dim=64)
    f = F.normalize(b["frames"], dim=-1)
    m = b["frame_mask"].float()[..., None]
    v = F.normalize((f * m).sum(1) / m.sum(1), dim=-1)
    want = 100 * F.normalize(b["text"], dim=-1) @ v.t()
    assert torch.allclose(scores(head, b), want, atol=1e-4)


@pytest.mark.parametrize("name", ["meanpool", "avigate"])
def test_padded_frames_do_not_count(name):
    torch.manual_seed(0)
    head = create_head(name, TINY_AVIGATE if name == "avigate" else None, dim=64, audio_dim=32)
    b = batch()
    garbage = dict(b, frames=b["frames"] + 50 * torch.randn_like(b["frames"]) * ~b["frame_mask"][..., None])
    assert torch.allclose(scores(head, b), scores(head, garbage), atol=1e-4)


def test_avigate_video_side_never_sees_text_and_silence_is_safe():
    torch.manual_seed(0)
    head = create_head("avigate", TINY_AVIGATE, dim=64, audio_dim=32)
    for layer in head.fusion:  # open the gates so audio actually flows
        torch.nn.init.normal_(layer.gate_mha.w2.weight, std=1.0)
    b = batch()
    head.eval()
    with torch.no_grad():
        v1 = head.encode_video(b)
        v2 = head.encode_video(dict(b, text=torch.randn_like(b["text"])))
        assert all(torch.equal(v1[k], v2[k]) for k in v1)
        # a silent video ignores its tokens entirely (masked), unless zero-fill is asked for
        noisy = dict(b, audio=b["audio"] + 10 * torch.randn_like(b["audio"]))
        v3 = head.encode_video(noisy)
        silent = ~b["has_audio"]
        assert torch.allclose(v1["frames"][silent], v3["frames"][silent])
        assert not torch.allclose(v1["frames"][~silent], v3["frames"][~silent])
        all_silent = dict(b, has_audio=torch.zeros(6, dtype=torch.bool), audio=torch.zeros(6, 8, 32))
        s = head.similarity(head.encode_text(b), head.encode_video(all_silent))
        assert torch.isfinite(s).all()
    zf = create_head("avigate", dict(TINY_AVIGATE, audio_zero_fill=True), dim=64, audio_dim=32)
    zf.load_state_dict(head.state_dict())
    zf.eval()
    with torch.no_grad():
        assert not torch.allclose(zf.encode_video(noisy)["frames"][silent], v3["frames"][silent])


def test_avigate_loss_and_gradients_are_finite():
    torch.manual_seed(0)
    head = create_head("avigate", TINY_AVIGATE, dim=64, audio_dim=32)
    b = batch()
    t, v = head.encode_text(b), head.encode_video(b)
    sim = head.similarity(t, v)
    loss = head.loss(sim, b, t, v)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    groups = {g["group"]: g for g in head.param_groups(1e-4, 0.2)}
    assert groups["queries"]["lr"] == pytest.approx(1e-3) and groups["no_decay"]["weight_decay"] == 0.0
    n_params = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n_params == sum(p.numel() for p in head.parameters())


def test_layer_counts_options_and_config_refusals_word_for_word():
    for bad in (-1, 0, True, 1.5):
        with pytest.raises(ValueError, match=rf"^fusion_layers must be a whole number >= 1, got {bad!r}$"):
            head_config("avigate", {"fusion_layers": bad}, dim=64)
    assert head_config("waver", {"temporal_layers": 0}, dim=64).temporal_layers == 0  # optional layers
    with pytest.raises(ValueError, match="^dim 60 is not divisible by n_heads 8$"):
        head_config("avigate", {"n_heads": 8}, dim=60)
    assert head_config("waver", {"teacher_k": 1, "tag_k": 1}, dim=64).teacher_k == 1
    with pytest.raises(ValueError):
        head_config("waver", {"teacher_k": 0}, dim=64)
    with pytest.raises(KeyError) as e:
        head_config("meanpool", {"bogus": 1, "dim": 64})
    assert "bogus" in str(e.value) and "(options: " + ", ".join(sorted(head_options("meanpool"))) + ")" in str(e.value)


def test_weight_decay_groups():
    head = create_head("avigate", TINY_AVIGATE, dim=64, audio_dim=32)
    groups = {g["group"]: g for g in head.param_groups(1e-3, 0.2)}
    names = {id(p): n for n, p in head.named_parameters()}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    assert "audio_proj.weight" in decay and all(p.ndim >= 2 for p in groups["decay"]["params"])
    assert "frame_embedding" in no_decay and "audio_proj.bias" in no_decay
    assert (groups["decay"]["lr"], groups["decay"]["weight_decay"]) == (1e-3, 0.2)
    assert (groups["no_decay"]["lr"], groups["no_decay"]["weight_decay"]) == (1e-3, 0.0)
    q = groups["queries"]
    assert q["params"] == [head.queries] and q["weight_decay"] == head.fusion_config.query_weight_decay
    assert q["lr"] == pytest.approx(1e-3 * TINY_AVIGATE["query_lr_scale"])


def test_release_module_shapes():
    """The parameter names and shapes a release checkpoint maps onto: the gate has no biases,
    WAVER's tag FFN is Linear-GELU-Linear."""
    from training.heads.avigate import Gate
    from training.heads.waver import TagInjection
    assert sorted(n for n, _ in Gate(8, 4).named_parameters()) == ["w1.weight", "w2.weight"]
    ffn = TagInjection(64, 4, 0.0).ffn
    assert [type(m).__name__ for m in ffn] == ["Linear", "GELU", "Linear"]


def _open_gates(head):
    from training.heads.avigate import Gate
    for m in head.modules():
        if isinstance(m, Gate):
            torch.nn.init.ones_(m.w2.weight)


@pytest.mark.parametrize("name", ["avigate", "avigate+waver"])
def test_open_gates_let_the_audio_in(name):
    head = create_head(name, {**TINY_AVIGATE, "temporal_layers": 0} if name != "avigate" else TINY_AVIGATE,
                       dim=64, audio_dim=32).eval()
    _open_gates(head)
    from .test_waver import _batch
    b = batch() if name == "avigate" else _batch()
    other = {**b, "audio": torch.randn_like(b["audio"])}
    base, moved = scores(head, b), scores(head, other)
    silent = ~b["has_audio"]
    assert not torch.allclose(base[:, ~silent], moved[:, ~silent])  # the audio reaches the video
    torch.testing.assert_close(base[:, silent], moved[:, silent])  # silent videos never hear it


def test_a_video_or_caption_without_any_valid_slot_is_its_first_slot():
    """A video whose mask is all padding (a decode that found nothing) is encoded as if
    slot 0 were valid, and a caption without tokens likewise: finite, and the same as
    marking that slot."""
    head = create_head("avigate", TINY_AVIGATE, dim=64, audio_dim=32).eval()
    b = batch()
    empty = {**b, "frame_mask": b["frame_mask"].clone()}
    empty["frame_mask"][2] = False
    first = {**empty, "frame_mask": empty["frame_mask"].clone()}
    first["frame_mask"][2, 0] = True
    torch.testing.assert_close(scores(head, empty), scores(head, first))
    from .test_waver import TINY_WAVER, _batch
    waver = create_head("waver", {**TINY_WAVER, "distill": "none"}, dim=64).eval()
    wb = _batch()
    wb["text_mask"] = wb["text_mask"].clone()
    wb["text_mask"][1] = False
    s = scores(waver, wb)
    fixed = {**wb, "text_mask": wb["text_mask"].clone()}
    fixed["text_mask"][1, 0] = True
    assert torch.isfinite(s).all()
    torch.testing.assert_close(s, scores(waver, fixed))


def test_config_and_encoding_refusals_word_for_word():
    cases = [("waver", {"distill": "bogus"}, 64, "^distill must be one of injection, kd, none, not 'bogus'$"),
             ("waver", {"n_heads": 7}, 64, "^dim 64 is not divisible by n_heads 7$"),
             ("waver", {"tag_k": 0}, 64, r"^tag_k and teacher_k must be >= 1 \(got 0, 4\)$"),
             ("waver", {"kd_temperature": 0.0}, 64, "^kd_temperature must be > 0, got 0.0$"),
             ("avigate", {"loss": "bogus"}, 64, "^loss must be 'margin' or 'infonce', not 'bogus'$")]
    for name, ov, dim, msg in cases:
        with pytest.raises(ValueError, match=msg):
            head_config(name, ov, dim=dim)
    with pytest.raises(KeyError, match=re.escape(f"unknown head 'nope' (known: {', '.join(sorted(HEADS))})")):
        create_head("nope", {}, dim=64)
    b = batch(n=16)
    for name in ("avigate", "waver"):
        head = create_head(name, {**TINY_AVIGATE} if name == "avigate" else {}, dim=64, audio_dim=32, max_frames=12)
        with pytest.raises(ValueError, match="^16 frames per video, the head was built for 12$"):
            head.encode_video(b)


def test_avigate_losses_by_name():
    from training.losses import adaptive_margin_loss, adaptive_margins, info_nce
    b = batch()
    for loss in ("infonce", "margin"):
        head = create_head("avigate", {**TINY_AVIGATE, "loss": loss, "margin_delta": 0.05}, dim=64, audio_dim=32).eval()
        t, v = head.encode_text(b), head.encode_video(b)
        sim = head.similarity(t, v)
        want = info_nce(sim) if loss == "infonce" else adaptive_margin_loss(
            sim, adaptive_margins(b["text"], v["frozen"], head.config.margin_lambda, 0.05), float(head.log_scale.exp()))
        torch.testing.assert_close(head.loss(sim, b, t, v), want)


def test_initial_parameters_as_the_releases():
    """Shapes and scales the releases initialise with: positions and queries at 0.01, the
    audio projection at 1/sqrt(audio width), no biases in the fusion FFN or the text adapter."""
    head = create_head("avigate", TINY_AVIGATE, dim=64, audio_dim=256)
    c = head.fusion_config
    assert head.query_embedding.shape == (c.queries, 64)
    std = {n: float(p.detach().std()) for n, p in head.named_parameters()}
    assert std["query_embedding"] < 0.02 and std["frame_embedding"] < 0.02
    assert std["audio_proj.weight"] == pytest.approx(256 ** -0.5, rel=0.1)
    assert sorted(n for n, _ in head.fusion[0].ffn.named_parameters()) == ["0.weight", "2.weight"]
    waver = create_head("waver", {"temporal_layers": 1}, dim=64)
    assert float(waver.temporal_embedding.detach().std()) < 0.02
    assert sorted(n for n, _ in waver.text_adapter.named_parameters()) == ["weight"]


def test_gate_metrics_and_single_batch_means():
    head = create_head("avigate", TINY_AVIGATE, dim=64, audio_dim=32)
    head.encode_video(batch())
    assert set(head.extra_metrics()) == {"gate_mha_abs", "gate_ffn_abs"}
    from .test_waver import TINY_WAVER, _batch
    waver = create_head("waver", {**TINY_WAVER, "distill": "kd"}, dim=64)
    wb = _batch()
    t, v = waver.encode_text(wb), waver.encode_video(wb)
    waver.loss(waver.similarity(t, v), wb, t, v)
    total = waver._sums["kd_loss"][0]
    (kd,) = waver.extra_metrics().values()
    assert kd == total > 0 and waver._sums == {}  # one batch: its own value, not halved


def test_meanpool_without_adapter_is_the_features_at_the_fixed_scale():
    head = create_head("meanpool", {"adapter": False, "learn_scale": True}, dim=64).eval()
    b = batch()
    s = scores(head, b)
    f = F.normalize(b["frames"], dim=-1) * b["frame_mask"][..., None]
    v = F.normalize(f.sum(1) / b["frame_mask"].sum(1, keepdim=True), dim=-1)
    torch.testing.assert_close(s, 100.0 * F.normalize(b["text"], dim=-1) @ v.t(), rtol=1e-4, atol=1e-4)
    assert [n for n, _ in head.named_parameters()] == ["log_scale"]
    groups = {g["group"]: g for g in create_head("meanpool", {"learn_scale": True}, dim=64).param_groups(0.5, 0.25)}
    assert (groups["decay"]["lr"], groups["decay"]["weight_decay"]) == (0.5, 0.25)  # the two adapters
    assert (groups["no_decay"]["lr"], groups["no_decay"]["weight_decay"]) == (0.5, 0.0)  # the scale


def test_tag_injection_matches_its_equations():
    """H = LN1(F + attn(F, T, T)); F' = LN2(H + FFN(H)); out = F + has * W_r F', with W_r
    opened so the injection shows; tags past a video's mask never count."""
    from training.heads.waver import TagInjection
    torch.manual_seed(0)
    inj = TagInjection(16, 4, 0.0).eval()
    torch.nn.init.normal_(inj.residual.weight)
    f, tags = torch.randn(3, 5, 16), torch.randn(3, 4, 16)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False], [False] * 4])
    with torch.no_grad():
        out = inj(f, tags, mask)
        want = []
        for i in range(3):
            if not mask[i].any():
                want.append(f[i])
                continue
            k = tags[i][mask[i]][None]
            g = inj.attn(f[i][None], k, k, need_weights=False)[0][0]
            h = inj.ln1(f[i] + g)
            h = inj.ln2(h + inj.ffn(h))
            want.append(f[i] + inj.residual(h))
    torch.testing.assert_close(out, torch.stack(want), rtol=1e-5, atol=1e-5)


def test_waver_video_side_edges():
    from .test_waver import TINY_WAVER, _batch
    from training.heads.waver import kd_loss
    head = create_head("waver", {**TINY_WAVER, "distill": "injection", "tag_k": 2, "temporal_layers": 0},
                       dim=64).eval()
    torch.nn.init.normal_(head.injection.residual.weight)  # opened, so the tags show
    wb = _batch()
    cut = {**wb, "tags": wb["tags"][:, :2], "tag_mask": wb["tag_mask"][:, :2]}
    torch.testing.assert_close(scores(head, wb), scores(head, cut))  # only the first tag_k tags
    empty = {**wb, "frame_mask": wb["frame_mask"].clone()}
    empty["frame_mask"][1] = False
    first = {**empty, "frame_mask": empty["frame_mask"].clone()}
    first["frame_mask"][1, 0] = True
    torch.testing.assert_close(scores(head, empty), scores(head, first))
    with torch.no_grad():
        v = head.encode_video(wb)
    assert v["pooled"].shape == (4, 64) and torch.allclose(v["pooled"].norm(dim=-1), torch.ones(4))
    assert torch.equal(head.index_vectors(v), v["pooled"])
    two = torch.tensor([True, True, False, False, False])
    assert float(kd_loss(torch.randn(3, 5), torch.randn(3, 5), two, 1.0)) > 0  # two videos are enough
