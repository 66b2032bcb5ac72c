import numpy as np
import pytest
import torch

from training.metrics import (rank_metrics, ranks_single, ranks_text_to_video, ranks_video_to_text,
                              retrieval_metrics, retrieval_report)


def clip4clip_compute_metrics(x):
    """CLIP4Clip's metrics.compute_metrics, verbatim in substance (tie-free inputs)."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    ind = np.where(sx - d == 0)[1]
    return {"R1": float(np.sum(ind == 0)) * 100 / len(ind), "R5": float(np.sum(ind < 5)) * 100 / len(ind),
            "R10": float(np.sum(ind < 10)) * 100 / len(ind), "MdR": np.median(ind) + 1, "MnR": np.mean(ind) + 1}


def clip4clip_multi(sim, cv):
    """CLIP4Clip's multi-sentence evaluation restated (main_task_retrieval.py: the [video,
    caption slot, video] reshape padded with -inf, ``tensor_text_to_video_metrics``,
    ``tensor_video_to_text_sim`` then ``compute_metrics``); captions grouped by video."""
    sim = torch.as_tensor(sim[np.argsort(cv, kind="stable")], dtype=torch.float64)
    cuts = np.cumsum(np.bincount(cv))
    longest = int(np.max(np.diff(np.concatenate([[0], cuts]))))
    grouped = torch.stack([torch.cat([sim[s:e], torch.full((longest - e + s, sim.shape[1]), -np.inf, dtype=sim.dtype)])
                           for s, e in zip(np.concatenate([[0], cuts[:-1]]), cuts)])
    # text->video: double argsort of each caption slot's row puts its rank on the diagonal
    first = torch.argsort(grouped.permute(1, 0, 2), dim=-1, descending=True)
    ranks = torch.flatten(torch.diagonal(torch.argsort(first, dim=-1), dim1=1, dim2=2))
    valid = ranks[~torch.isinf(torch.flatten(torch.diagonal(grouped, dim1=0, dim2=2)))].numpy()
    t2v = {"R1": float(np.sum(valid < 1)) * 100 / len(valid), "R5": float(np.sum(valid < 5)) * 100 / len(valid),
           "R10": float(np.sum(valid < 10)) * 100 / len(valid), "MdR": float(torch.median(torch.as_tensor(valid) + 1)),
           "MnR": float(np.mean(valid + 1))}
    # video->text: each group's best caption against every video, transposed
    v2t = clip4clip_compute_metrics(torch.max(grouped, dim=1).values.T.numpy())
    return t2v, v2t


def test_multi_caption_matches_clip4clip_without_ties():
    rng = np.random.default_rng(3)
    n_v = 40
    cv = rng.permutation(np.concatenate([np.arange(n_v), rng.integers(0, n_v, 41)]))  # 81 captions, 1-5 each
    sim = rng.standard_normal((len(cv), n_v)) + 2.5 * np.eye(n_v)[cv] * rng.random((len(cv), 1))
    t2v, v2t = clip4clip_multi(sim, cv)
    assert retrieval_metrics(sim, cv) == pytest.approx(t2v)  # odd count: torch's median is numpy's
    assert retrieval_metrics(sim, cv, direction="v2t") == pytest.approx(v2t)
    assert retrieval_metrics(sim, cv, direction="v2t", v2t="groups") == pytest.approx(v2t)
    assert retrieval_metrics(sim, cv, direction="v2t", v2t="captions") != pytest.approx(v2t)


def test_hand_computed_square():
    sim = np.array([[0.9, 0.1, 0.2],   # correct first: rank 0
                    [0.5, 0.4, 0.6],   # two above: rank 2
                    [0.1, 0.8, 0.3]])  # one above: rank 1
    assert ranks_single(sim).tolist() == [0, 2, 1]
    m = retrieval_metrics(sim)
    assert m["R1"] == pytest.approx(100 / 3) and m["R5"] == 100.0
    assert m["MdR"] == 2.0 and m["MnR"] == pytest.approx(2.0)
    # video->text is the transpose: columns [0.9,.5,.1] r0, [.1,.4,.8] r1, [.2,.6,.3] r1
    assert ranks_single(sim.T).tolist() == [0, 1, 1]
    assert retrieval_metrics(sim, direction="v2t")["MdR"] == 2.0


def test_even_count_median_is_numpy_mean_of_middle():
    sim = np.array([[1.0, 0.0, 0.0, 0.0],
                    [0.0, 1.0, 0.0, 0.0],
                    [0.0, 2.0, 1.0, 0.0],   # rank 1
                    [3.0, 2.0, 1.5, 1.0]])  # rank 3
    assert ranks_single(sim).tolist() == [0, 0, 1, 3]
    assert retrieval_metrics(sim)["MdR"] == 1.5  # median(0,0,1,3) + 1


def test_matches_clip4clip_without_ties():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((50, 50)) + 3 * np.eye(50) * rng.random(50)
    for direction, x in (("t2v", sim), ("v2t", sim.T)):
        ours, ref = retrieval_metrics(sim, direction=direction), clip4clip_compute_metrics(x)
        assert ours == pytest.approx(ref)


def test_ties_are_pessimistic():
    sim = np.ones((4, 4))  # every candidate tied: the worst rank, never a perfect score
    assert ranks_single(sim).tolist() == [3, 3, 3, 3]
    assert retrieval_metrics(sim)["R1"] == 0.0
    sim = np.array([[0.5, 0.5, 0.1], [0.0, 1.0, 0.0], [0.2, 0.2, 0.2]])
    assert ranks_single(sim).tolist() == [1, 0, 2]


def test_multi_caption_protocol():
    cv = np.array([0, 0, 1, 1, 2])  # captions of videos 0, 0, 1, 1, 2
    sim = np.array([[0.9, 0.1, 0.0],
                    [0.2, 0.3, 0.1],   # video 1 above: rank 1
                    [0.0, 0.8, 0.1],
                    [0.7, 0.6, 0.6],   # video 0 above, video 2 tied: rank 2
                    [0.5, 0.4, 0.5]])  # video 0 tied: rank 1
    assert ranks_text_to_video(sim, cv).tolist() == [0, 1, 0, 2, 1]
    # video 0: best correct 0.9, nothing else >= 0.9 -> 0; video 1: best 0.8 -> 0;
    # video 2: best 0.5; other captions >= 0.5 in column 2: caption 3 (0.6) -> 1
    assert ranks_video_to_text(sim, cv, "captions").tolist() == [0, 0, 1]
    # a video's other correct captions never count against it
    sim2 = np.array([[0.9], [0.95]])
    assert ranks_video_to_text(sim2, np.array([0, 0]), "captions").tolist() == [0]
    # groups (CLIP4Clip): video 0 sees groups at 0.9, 0.7, 0.5: rank 0; video 2 sees 0.1,
    # 0.6, 0.5: rank 1. Where one video's captions crowd the top, captions count each of
    # them, groups count the video once
    assert ranks_video_to_text(sim, cv, "groups").tolist() == [0, 0, 1]
    crowd = np.array([[0.5, 0.0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])  # video 0: 1 caption
    cv3 = np.array([0, 1, 1, 1])
    assert ranks_video_to_text(crowd, cv3, "captions").tolist() == [3, 0]
    assert ranks_video_to_text(crowd, cv3, "groups").tolist() == [1, 0]


def test_report_single_rows_and_blocks():
    rng = np.random.default_rng(1)
    cv = np.repeat(np.arange(30), 3)
    sim = rng.standard_normal((90, 30)).astype(np.float32)
    rep = retrieval_report(torch.from_numpy(sim), cv, np.arange(0, 90, 3))
    assert rep["single"]["t2v"] == retrieval_metrics(sim[::3])
    assert rep["n_videos"] == 30 and rep["n_captions"] == 90
    # the block size does not change the result
    assert (ranks_text_to_video(sim, cv, block=7) == ranks_text_to_video(sim, cv)).all()
    for v2t in ("groups", "captions"):
        assert (ranks_video_to_text(sim, cv, v2t, block=7) == ranks_video_to_text(sim, cv, v2t)).all()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no caption"):
        ranks_video_to_text(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="groups, captions"):
        retrieval_metrics(np.zeros((2, 2)), np.array([0, 1]), direction="v2t", v2t="best")


def test_ranks_past_the_first_block_match_brute_force():
    """2,500 rows: three blocks of 1,024. A block-local ground-truth column would still
    pass on the first block and fail on the others."""
    rng = np.random.default_rng(7)
    n = 2500
    cv = np.repeat(np.arange(n // 2), 2)  # two captions per video: [n, n // 2] for the multi protocol
    sim = rng.standard_normal((n, n)).astype(np.float32)
    sim[np.arange(n), np.arange(n)] += 2.5  # most queries near the top, not all at rank 0
    sim[np.arange(n), cv] += 2.5
    brute = np.array([(sim[i] >= sim[i, i]).sum() - 1 for i in range(n)])
    np.testing.assert_array_equal(ranks_single(sim), brute)
    assert 0 < (brute == 0).mean() < 1 and (brute[1024:] > 0).any()
    s = sim[:, : n // 2]
    brute_t2v = np.array([(s[i] >= s[i, cv[i]]).sum() - 1 for i in range(n)])
    np.testing.assert_array_equal(ranks_text_to_video(s, cv), brute_t2v)
    groups = np.stack([s[cv == v].max(axis=0) for v in range(n // 2)])  # [group, video]
    brute_v2t = np.array([(groups[:, v] >= groups[v, v]).sum() - 1 for v in range(n // 2)])
    np.testing.assert_array_equal(ranks_video_to_text(s, cv, block=500), brute_v2t)
    best = np.array([s[cv == v, v].max() for v in range(n // 2)])
    brute_caps = np.array([((s[:, v] >= best[v]) & (cv != v)).sum() for v in range(n // 2)])
    np.testing.assert_array_equal(ranks_video_to_text(s, cv, "captions"), brute_caps)


def test_format_report_rows_and_numbers():
    from training.metrics import format_report
    cv = np.array([0, 0, 1, 2])
    sim = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.1], [0.0, 0.8, 0.1], [0.5, 0.4, 0.45]])
    rep = retrieval_report(sim, cv, np.array([0, 2, 3]), protocol="multi")
    lines = format_report(rep, "title").splitlines()
    assert lines[0] == "title"
    assert lines[1] == ("protocol: multi (CLIP4Clip's multi-sentence: every caption ranks the videos; each video "
                        "ranks the caption groups, a group scoring its best caption)")
    assert lines[2] == f"{'protocol':<10}{'dir':<5}" + "".join(f"{k:>8}" for k in ("R1", "R5", "R10", "MdR", "MnR"))
    # multi t2v ranks [0, 1, 0, 1]; single t2v ranks [0, 0, 1]
    assert lines[3] == f"{'multi':<10}{'t2v':<5}" + "".join(f"{x:>8.1f}" for x in (50, 100, 100, 1, 1.5))
    assert [line[:15] for line in lines[3:7]] == ["multi     t2v  ", "multi     v2t  ", "single    t2v  ",
                                                  "single    v2t  "]
    assert lines[5] == f"{'single':<10}{'t2v':<5}" + "".join(f"{x:>8.1f}" for x in (200 / 3, 100, 100, 1, 4 / 3))
    assert lines[7] == "(3 videos, 4 captions)" and len(lines) == 8
    assert format_report(rep).splitlines()[0].startswith("protocol: multi")


def test_report_directions_and_messages():
    rng = np.random.default_rng(2)
    cv = np.repeat(np.arange(12), 2)
    sim = rng.standard_normal((24, 12))
    rep = retrieval_report(sim, cv, np.arange(0, 24, 2))
    assert rep["single"]["v2t"] == retrieval_metrics(sim[::2].T) != rep["single"]["t2v"]
    assert rep["multi"]["v2t"] == retrieval_metrics(sim, cv, direction="v2t") != rep["multi"]["t2v"]
    with pytest.raises(ValueError, match=r"^unknown protocol 'x' \(known: single, paragraph, multi\)$"):
        retrieval_report(sim, cv, np.arange(0, 24, 2), protocol="x")
    with pytest.raises(ValueError, match="^direction must be t2v or v2t, not 'up'$"):
        retrieval_metrics(sim[:12], direction="up")
    with pytest.raises(ValueError, match="^no queries to rank$"):
        rank_metrics(np.array([], dtype=np.int64))
    assert rank_metrics(np.array([3])) == {"R1": 0.0, "R5": 100.0, "R10": 100.0, "MdR": 4.0, "MnR": 4.0}
    from training.metrics import format_report
    del rep["protocol"]  # a report from before protocols were recorded reads as single
    assert format_report(rep).splitlines()[0].startswith("protocol: single (one caption per video")


def test_rank_arrays_are_integers_and_shape_errors_name_the_shapes():
    rng = np.random.default_rng(4)
    cv = np.repeat(np.arange(3), 2)
    sim = rng.standard_normal((6, 3))
    for ranks in (ranks_single(sim[::2]), ranks_text_to_video(sim, cv), ranks_video_to_text(sim, cv),
                  ranks_video_to_text(sim, cv, "captions")):
        assert ranks.dtype == np.int64
    for f in (ranks_text_to_video, ranks_video_to_text):
        with pytest.raises(ValueError, match=r"^caption_video has \(5,\), similarity \(6, 3\)$"):
            f(sim, cv[:5])
    # the first five videos without a caption are named
    many = rng.standard_normal((2, 9))
    with pytest.raises(ValueError, match=r"^video\(s\) \[1, 2, 3, 4, 5\] have no caption$"):
        ranks_video_to_text(many, np.array([0, 8]))


def test_tensors_needing_grad_or_in_bfloat16_and_exact_input_errors():
    sim = np.array([[0.9, 0.1], [0.2, 0.6]], dtype=np.float32)
    want = retrieval_metrics(sim)
    assert retrieval_metrics(torch.tensor(sim, requires_grad=True)) == want  # numpy cannot take these two
    assert retrieval_metrics(torch.tensor(sim).bfloat16()) == want
    with pytest.raises(ValueError, match=r"^similarity must be 2-D, got shape \(3,\)$"):
        retrieval_metrics(np.zeros(3))
    with pytest.raises(ValueError, match="^similarity holds NaN$"):
        retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]))


def test_captions_convention_counts_a_tie_with_the_best_caption():
    cv = np.array([0, 1])
    sim = np.array([[0.5, 0.2], [0.5, 0.7]])  # video 0's best caption (0.5) tied by video 1's caption
    assert ranks_video_to_text(sim, cv, "captions").tolist() == [1, 0]
