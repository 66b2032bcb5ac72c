import numpy as np
import pytest
import torch

from training.metrics import (ranks_single, ranks_text_to_video, ranks_video_to_text,
                              retrieval_metrics, retrieval_report)


def clip4clip_compute_metrics(x):
    """CLIP4Clip's metrics.compute_metrics, verbatim in substance (tie-free inputs)."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    ind = np.where(sx - d == 0)[1]
    return {"R1": float(np.sum(ind == 0)) * 100 / len(ind), "R5": float(np.sum(ind < 5)) * 100 / len(ind),
            "R10": float(np.sum(ind < 10)) * 100 / len(ind), "MdR": np.median(ind) + 1, "MnR": np.mean(ind) + 1}


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
    assert ranks_video_to_text(sim, cv).tolist() == [0, 0, 1]
    # a video's other correct captions never count against it
    sim2 = np.array([[0.9], [0.95]])
    assert ranks_video_to_text(sim2, np.array([0, 0])).tolist() == [0]


def test_report_single_rows_and_blocks():
    rng = np.random.default_rng(1)
    cv = np.repeat(np.arange(30), 3)
    sim = rng.standard_normal((90, 30)).astype(np.float32)
    rep = retrieval_report(torch.from_numpy(sim), cv, np.arange(0, 90, 3))
    assert rep["single"]["t2v"] == retrieval_metrics(sim[::3])
    assert rep["n_videos"] == 30 and rep["n_captions"] == 90
    # the block size does not change the result
    assert (ranks_text_to_video(sim, cv, block=7) == ranks_text_to_video(sim, cv)).all()
    assert (ranks_video_to_text(sim, cv, block=7) == ranks_video_to_text(sim, cv)).all()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no caption"):
        ranks_video_to_text(np.zeros((2, 3)), np.array([0, 1]))
