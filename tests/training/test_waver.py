"""WAVER heads: exact masks, the KD loss, every variant learns, the style-shift gap is
measured, the planted tags follow the tags step's rule, and AVIGATE+WAVER beats both parents
when the code is split across frames and audio."""
import numpy as np
import pytest
import torch

from training.data import AudioTokens, pooled_audio, select_split
from training.heads import create_head
from training.heads.waver import kd_loss, teacher_embedding
from training.planted_waver import write_waver_store
from training.style import style_report
from training.evaluate import evaluate_split
from training.runs import TrainConfig, load_run
from training.trainer import train

from .conftest import TINY_AVIGATE

FAST = dict(batch_size=32, lr=1e-3, audio_tokens="pool-tokens-8", seed=0)
# the tag and KD settings the learning claims below were measured at (before `vtr sweep`
# chose the defaults 4, 4 and 1 on val)
TINY_WAVER = {"n_heads": 4, "temporal_layers": 1, "wti_hidden": 64,
              "tag_k": 8, "teacher_k": 8, "kd_temperature": 8.0}
TINY_BOTH = {**TINY_WAVER, **TINY_AVIGATE, "temporal_layers": 0}
VARIANTS = [("waver", {**TINY_WAVER, "distill": d}) for d in ("none", "injection", "kd")] + \
    [("avigate+waver", {**TINY_BOTH, "distill": d}) for d in ("injection", "kd")]
QUIET = dict(progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def tagged_store(tmp_path_factory):
    """The whole code in frames (bent far from the caption space) and tags; a tenth of the
    videos without tags, a tenth silent."""
    path = str(tmp_path_factory.mktemp("waver") / "tagged.zarr")
    info = write_waver_store(path, 300, 3, misalign=0.8, no_tags_fraction=0.1, no_audio_fraction=0.1,
                             audio_share=0.0, n_shift_styles=0, seed=1)
    return path, info


def split_store(path: str, seed: int) -> str:
    """Code split: 5/8 in frames (bent far from the caption space), 3/8 only in audio."""
    write_waver_store(path, 300, 3, code_dim=8, audio_share=0.375, noise=1.0, caption_noise=0.7, misalign=0.8,
                      no_audio_fraction=0.1, no_tags_fraction=0.1, n_shift_styles=0, splits=(200, 20, 80),
                      seed=seed)
    return path


@pytest.fixture(scope="module")
def styled_store(tmp_path_factory):
    """Four writers, each describing mostly one group of videos whose look matches the
    writer's style; test captions rewritten as the other writers would write them."""
    path = str(tmp_path_factory.mktemp("waver") / "styled.zarr")
    write_waver_store(path, 300, 3, n_styles=4, style_tied=0.9, style_scale=0.6, style_nuisance=0.6,
                      n_shift_styles=3, splits=(200, 20, 80), seed=3)
    return path


def _batch(n_frames=12, n_words=8, n_tags=6, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    frame_mask = torch.arange(n_frames)[None] < torch.tensor([12, 5, 1, 8])[:b, None]
    text_mask = torch.arange(n_words)[None] < torch.tensor([8, 3, 2, 5])[:b, None]
    tag_mask = torch.arange(n_tags)[None] < torch.tensor([6, 2, 0, 1])[:b, None]  # video 2: no tags
    return {"frames": torch.randn(b, n_frames, 64, generator=g) * frame_mask[..., None],
            "frame_mask": frame_mask, "text": torch.randn(b, 64, generator=g),
            "text_tokens": torch.randn(b, n_words, 64, generator=g) * text_mask[..., None], "text_mask": text_mask,
            "tags": torch.randn(b, n_tags, 64, generator=g) * tag_mask[..., None], "tag_mask": tag_mask,
            "audio": torch.randn(b, 8, 32, generator=g), "has_audio": torch.tensor([True, False, True, True])}


def _scores(head, batch):
    with torch.no_grad():
        return head.similarity(head.encode_text(batch), head.encode_video(batch))


@pytest.mark.parametrize("name,ov", VARIANTS)
def test_padding_never_changes_a_score(name, ov):
    torch.manual_seed(0)
    head = create_head(name, {**ov, "tag_k": 6}, dim=64, audio_dim=32, max_frames=12).eval()
    b = _batch(n_frames=10, n_words=6, n_tags=6)
    ref = _scores(head, b)
    assert torch.isfinite(ref).all()
    # garbage (huge values, NaN) in every padded slot: bit-identical scores
    g = dict(b)
    g["frames"] = torch.where(b["frame_mask"][..., None], b["frames"], torch.full_like(b["frames"], 1e4))
    g["frames"][2, 5:] = float("nan")
    g["text_tokens"] = torch.where(b["text_mask"][..., None], b["text_tokens"], torch.full_like(b["text_tokens"], -1e4))
    g["tags"] = torch.where(b["tag_mask"][..., None], b["tags"], torch.full_like(b["tags"], 3e3))
    assert torch.equal(_scores(head, g), ref)
    # more padded frames, words and tags: the same scores up to float summation order
    p = dict(b)
    p["frames"] = torch.cat([b["frames"], torch.randn(4, 2, 64) * 50], 1)
    p["frame_mask"] = torch.cat([b["frame_mask"], torch.zeros(4, 2, dtype=torch.bool)], 1)
    p["text_tokens"] = torch.cat([b["text_tokens"], torch.randn(4, 3, 64) * 50], 1)
    p["text_mask"] = torch.cat([b["text_mask"], torch.zeros(4, 3, dtype=torch.bool)], 1)
    torch.testing.assert_close(_scores(head, p), ref, rtol=0, atol=1e-4)  # logits at scale 100


def test_wti_matches_its_definition():
    """S = 1/2 [sum_i w_t,i max_j s_ij + sum_j w_v,j max_i s_ij] over valid i, j, computed by hand."""
    torch.manual_seed(0)
    head = create_head("waver", {**TINY_WAVER, "distill": "none", "temporal_layers": 0}, dim=64).eval()
    b = _batch()
    with torch.no_grad():
        t, v = head.encode_text(b), head.encode_video(b)
        got = head.similarity(t, v) / 100
    for i in range(4):
        for j in range(4):
            tm, vm = t["mask"][i], v["mask"][j]
            s = t["tokens"][i][tm] @ v["frames"][j][vm].t()
            want = 0.5 * ((t["weights"][i][tm] * s.max(1).values).sum() + (v["weights"][j][vm] * s.max(0).values).sum())
            assert abs(float(got[i, j]) - float(want)) < 1e-5
            assert abs(float(t["weights"][i].sum()) - 1) < 1e-6 and float(t["weights"][i][~tm].sum()) == 0


def test_videos_without_tags_get_no_injection():
    torch.manual_seed(0)
    head = create_head("waver", {**TINY_WAVER, "distill": "injection", "temporal_layers": 0}, dim=64).eval()
    torch.nn.init.normal_(head.injection.residual.weight)  # open the zero-initialised path
    b = _batch()
    with torch.no_grad():
        inj = head.encode_video(b)["frames"]
        head.injection = None
        plain = head.encode_video(b)["frames"]
    assert torch.equal(inj[2], plain[2])  # video 2 has no tag
    assert not torch.allclose(inj[0], plain[0])


def test_padded_tags_never_reach_the_frames():
    """With the injection path open, garbage in the padded tag slots changes nothing (the
    frames attend to valid tags only)."""
    torch.manual_seed(0)
    head = create_head("waver", {**TINY_WAVER, "distill": "injection", "temporal_layers": 0, "tag_k": 6},
                       dim=64).eval()
    torch.nn.init.normal_(head.injection.residual.weight)
    b = _batch()
    g = dict(b, tags=torch.where(b["tag_mask"][..., None], b["tags"], torch.full_like(b["tags"], 30.0)))
    with torch.no_grad():
        torch.testing.assert_close(head.encode_video(g)["frames"], head.encode_video(b)["frames"], rtol=0, atol=1e-6)


def test_kd_loss_and_teacher():
    s = torch.randn(5, 5) * 10
    valid = torch.tensor([True, True, False, True, True])
    assert float(kd_loss(s, s.clone(), valid, 4.0)) == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(5, 5) * 10
    loss = kd_loss(s, t, valid, 4.0)
    assert float(loss) > 0
    s2 = s.clone()
    s2[:, 2] = 1e4  # a video the teacher cannot score is out of both distributions
    assert float(kd_loss(s2, t, valid, 4.0)) == pytest.approx(float(loss))
    assert float(kd_loss(s, t, torch.tensor([True] + [False] * 4), 4.0)) == 0.0
    # the paper's form: T^2 * KL(teacher || student) at temperature T, rows averaged
    T, cols = 4.0, valid.nonzero().squeeze(1)
    want = T ** 2 * torch.nn.functional.kl_div(torch.log_softmax(s[:, cols] / T, -1),
                                               torch.log_softmax(t[:, cols] / T, -1),
                                               log_target=True, reduction="batchmean")
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    tags = torch.randn(3, 4, 8)
    g, has = teacher_embedding(tags, torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]).bool(), 2)
    assert has.tolist() == [True, False, True]
    want = torch.nn.functional.normalize(tags[0, 0] / tags[0, 0].norm() + tags[0, 1] / tags[0, 1].norm(), dim=0)
    torch.testing.assert_close(g[0], want)


def test_kd_loss_term_of_the_head_and_its_epoch_mean():
    """The head's loss with distill=kd is InfoNCE plus beta times KD against the teacher
    built from the batch's tags (videos without tags out), logged and averaged per epoch."""
    from training.losses import info_nce

    head = create_head("waver", {**TINY_WAVER, "distill": "kd", "kd_beta": 0.5, "teacher_k": 2}, dim=64).eval()
    assert head.loss_fields == ("text", "tags", "tag_mask")
    terms = []
    for seed in (0, 1):
        batch = _batch(seed=seed)
        with torch.no_grad():
            t_repr, v_repr = head.encode_text(batch), head.encode_video(batch)
            sim = head.similarity(t_repr, v_repr)
            loss = head.loss(sim, batch, t_repr, v_repr)
        g, has = teacher_embedding(batch["tags"], batch["tag_mask"], 2)
        assert has.tolist() == [True, True, False, True]
        teacher = 100.0 * torch.nn.functional.normalize(batch["text"], dim=-1) @ g.t()
        kd = kd_loss(sim, teacher, has, TINY_WAVER["kd_temperature"])
        assert float(kd) > 0
        torch.testing.assert_close(loss, info_nce(sim) + 0.5 * kd)
        terms.append(float(kd))
    assert head.extra_metrics() == pytest.approx({"kd_loss": sum(terms) / 2})
    assert head.extra_metrics() == {}  # a new epoch starts from nothing


def test_kd_student_is_scored_without_the_teacher():
    kd = create_head("waver", {"distill": "kd"}, dim=64)
    assert "tags" not in kd.video_fields + kd.text_fields and "tags" in kd.loss_fields
    inj = create_head("waver", {"distill": "injection"}, dim=64)
    assert "tags" in inj.video_fields and not inj.loss_fields


@pytest.mark.parametrize("name,ov", VARIANTS)
def test_every_variant_learns(tagged_store, tmp_path, name, ov):
    store, _ = tagged_store
    torch.manual_seed(0)
    untrained = create_head(name, ov, dim=64, audio_dim=32)
    test = select_split(store, "test")
    audio = pooled_audio(store, str(tmp_path / "a.npy"), AudioTokens.parse("pool-tokens-8"), progress=False) if "audio" in untrained.video_fields else None
    before = evaluate_split(untrained, store, test, audio, torch.device("cpu"))["multi"]["t2v"]["R1"]
    res = train(store, name, str(tmp_path / "run"), ov, TrainConfig(epochs=4, **FAST), **QUIET)["test"]
    chance = 100 / res["n_videos"]
    assert res["multi"]["t2v"]["R1"] > 10 * chance, res["multi"]
    # the KD teacher's tags are ranked against the bent frames (as real tags are), so they
    # are a noisy target: measured at seed 0, waver/kd 54.4 -> 63.3, avigate+waver/kd
    # 56.7 -> 66.7, against gains of more than 20 for the heads without a teacher
    gain = 6 if ov["distill"] == "kd" else 20
    assert res["multi"]["t2v"]["R1"] > before + gain, (before, res["multi"])
    assert res["single"]["v2t"]["R1"] > 10 * chance
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    if ov["distill"] == "kd":
        assert "kd_loss" in rows[0].split(",")


@pytest.mark.slow
def test_combined_head_beats_both_parents_on_a_split_code(tmp_path):
    """5/8 of the code in frames bent far from the caption space, 3/8 only in audio; tags
    ranked from the frames. avigate hears the audio but reads the bent frames; waver gets
    the frame content in caption space through the tags but is deaf; avigate+waver has
    both. Averaged over two stores; measured t2v R@1 (avigate, waver, avigate+waver):
    seed 1 23.3 / 16.7 / 45.0, seed 2 10.0 / 17.9 / 33.8."""
    r1 = {}
    for seed in (1, 2):
        store = split_store(str(tmp_path / f"split{seed}.zarr"), seed)
        for name, ov in (("avigate", TINY_AVIGATE), ("waver", {**TINY_WAVER, "distill": "injection"}),
                         ("avigate+waver", {**TINY_BOTH, "distill": "injection"})):
            res = train(store, name, str(tmp_path / f"{name}{seed}"), ov, TrainConfig(epochs=8, **FAST), **QUIET)
            r1.setdefault(name, []).append(res["test"]["multi"]["t2v"]["R1"])
    mean = {k: float(np.mean(v)) for k, v in r1.items()}
    assert mean["avigate+waver"] > max(mean["avigate"], mean["waver"]) + 8, r1


def test_style_shift_gap_is_measured_for_every_head(styled_store, tmp_path):
    """A writer's style is a cue to the look of the videos it mostly describes: contrastive
    training learns the cue, rewriting the caption as another writer misleads it.

    No claim that KD shrinks the gap: with tags ranked from the frames (as real tags are),
    the frames' look reaches the tags, so the teacher inherits the style cue. Measured at
    seed 0 (mean gap): meanpool 14.2, waver/none 11.7, waver/kd 15.4; at the sweep's
    kd_temperature 1, kd's gap is 20.8 (teacher_k 8) and 44.6 (teacher_k 4)."""
    test = select_split(styled_store, "test")
    rep = {}
    for key, name, ov in (("meanpool", "meanpool", None), ("none", "waver", {**TINY_WAVER, "distill": "none"}),
                          ("kd", "waver", {**TINY_WAVER, "distill": "kd"})):
        train(styled_store, name, str(tmp_path / key), ov, TrainConfig(epochs=10, **FAST), **QUIET)
        head, _ = load_run(str(tmp_path / key))
        rep[key] = style_report(head, styled_store, test, None, torch.device("cpu"))
    gap = {k: r["mean_gap"] for k, r in rep.items()}
    assert gap["meanpool"] > 5, gap  # the store does plant a gap
    plain = {k: r["plain"]["R1"] for k, r in rep.items()}
    # KD costs little plain R@1 (measured at seed 0, the schedule over the epochs' real
    # batch count: meanpool 97.5, kd 92.5, i.e. four of 80 captions)
    assert plain["kd"] >= plain["meanpool"] - 7.5, plain
    assert set(rep["kd"]["styles"]) == {"writer+1", "writer+2", "writer+3"}
    assert np.isfinite(rep["kd"]["writers"]["gap"])


def test_decorrelation_regulariser():
    from training.heads.waver import decorrelation_loss
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 3, 8, generator=g)
    m = torch.ones(512, 3, dtype=torch.bool)
    w = torch.full((512, 3), 1 / 3)
    # a caption token equal to its frame: channels fully correlated, the diagonal at 1
    assert float(decorrelation_loss(x, m, w, x, m, w, 0.14, 0.0)) < 1e-3
    assert float(decorrelation_loss(x, m, w, -x, m, w, 1.0, 0.0)) > 1  # best matches of -x: far from 1
    mixed = torch.cat([x[..., :1]] * 8, -1)  # every channel the same: off-diagonal terms
    assert float(decorrelation_loss(x, m, w, mixed, m, w, 0.0, 1.0)) > 1
    head = create_head("waver", {**TINY_WAVER, "drl_lambda": 0.001}, dim=64)
    b = _batch()
    t, v = head.encode_text(b), head.encode_video(b)
    head.loss(head.similarity(t, v), b, t, v).backward()
    assert "decorrelation" in head.extra_metrics() and head.extra_metrics() == {}  # epoch means, then reset


def test_planted_tags_follow_the_tags_step(tagged_store):
    """The planted store's tags are what the flow's tags step would rank from its stored
    frames and phrase embeddings (extractors/tags.py), so they hold nothing the frames
    lack."""
    from extractors.tags import mean_frame_embedding, rank_tags
    from storage import open_group

    store, info = tagged_store
    g = open_group(store, mode="r")
    want, want_score = rank_tags(mean_frame_embedding(g["frame_features"][:], g["frame_mask"][:]),
                                 g["phrase_embedding"][:], k=g["tag_index"].shape[1])
    ok = ~info["no_tags"]
    assert ok.sum() > 200
    np.testing.assert_array_equal(g["tag_index"][:][ok], want[ok])
    np.testing.assert_allclose(g["tag_score"][:][ok], want_score[ok], atol=1e-3)  # stored as float16
