"""Retrieval metrics with CLIP4Clip's conventions (see ../shared/reference/msrvtt.md).

``sim[query, candidate]``. The rank of a query is the number of wrong candidates that
score at least as high as its correct one (0-based), so R@K = 100 * mean(rank < K),
MdR = numpy median(rank) + 1, MnR = mean(rank) + 1.

Ties are pessimistic: a wrong candidate tied with the correct one counts as ranked above
it. On matrices without ties this is exactly CLIP4Clip's ``compute_metrics`` (which counts
strictly higher scores); on ties CLIP4Clip emits one rank per tied position, so its
number of queries changes, which we do not reproduce. A constant matrix therefore gives
the worst rank, never a perfect score.

Multi-caption protocol (``caption_video`` given), CLIP4Clip's multi-sentence evaluation
(MSVD, VATEX): text->video ranks each caption's video among all videos, and MdR is the
lower of the two middle ranks on an even count (``torch.median``, as CLIP4Clip's
``tensor_text_to_video_metrics``), not numpy's mean of them. Video->text has two
conventions (``v2t``):

* ``"groups"`` (the default, CLIP4Clip's ``tensor_video_to_text_sim``): each video's
  candidates are the videos' caption groups, a group scoring its best caption; the rank
  is the number of other groups whose best caption scores at least as high;
* ``"captions"``: each video's best-scoring caption ranked among all captions, the other
  captions of the same video excluded from the count.

Rows are processed in blocks, so the comparison never materialises more than
``block x n_candidates`` booleans.
"""
from __future__ import annotations

import numpy as np

KEYS = ("R1", "R5", "R10", "MdR", "MnR")
V2T = ("groups", "captions")
# What each store protocol (storage.PROTOCOLS) is scored by, for the report's first rows.
PRIMARY = {"single": "single", "paragraph": "single", "multi": "multi"}
PROTOCOL_NOTES = {
    "single": "one caption per video (the first), square matrix",
    "paragraph": "one paragraph per video, square matrix",
    "multi": "CLIP4Clip's multi-sentence: every caption ranks the videos; each video ranks the "
             "caption groups, a group scoring its best caption",
}


def rank_metrics(ranks: np.ndarray, lower_median: bool = False) -> dict[str, float]:
    """R@1/5/10, MdR and MnR from 0-based ranks; ``lower_median``: MdR from the lower
    middle rank of an even count (torch's median) instead of numpy's mean of the two."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no queries to rank")
    median = np.sort(ranks)[(ranks.size - 1) // 2] if lower_median else np.median(ranks)
    return {
        "R1": float(100.0 * np.mean(ranks < 1)),
        "R5": float(100.0 * np.mean(ranks < 5)),
        "R10": float(100.0 * np.mean(ranks < 10)),
        "MdR": float(median + 1),
        "MnR": float(np.mean(ranks) + 1),
    }


def _as_array(sim) -> np.ndarray:
    if hasattr(sim, "detach"):  # a torch tensor
        sim = sim.detach().float().cpu().numpy()
    sim = np.asarray(sim)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be 2-D, got shape {sim.shape}")
    if np.isnan(sim).any():
        raise ValueError("similarity holds NaN")
    return sim


def ranks_single(sim, block: int = 1024) -> np.ndarray:
    """Ranks for a square matrix with the correct candidate on the diagonal."""
    sim = _as_array(sim)
    n = sim.shape[0]
    if sim.shape[1] != n:
        raise ValueError(f"single-caption protocol needs a square matrix, got {sim.shape}")
    out = np.empty(n, dtype=np.int64)
    for a in range(0, n, block):
        b = min(a + block, n)
        rows = sim[a:b]
        gt = rows[np.arange(b - a), np.arange(a, b)]
        # ">=" counts the correct candidate itself once: subtract it
        out[a:b] = (rows >= gt[:, None]).sum(axis=1) - 1
    return out


def ranks_text_to_video(sim, caption_video: np.ndarray, block: int = 1024) -> np.ndarray:
    """Multi-caption text->video: ``sim`` is [n_captions, n_videos]."""
    sim = _as_array(sim)
    cv = np.asarray(caption_video, dtype=np.int64)
    if cv.shape != (sim.shape[0],):
        raise ValueError(f"caption_video has {cv.shape}, similarity {sim.shape}")
    out = np.empty(sim.shape[0], dtype=np.int64)
    for a in range(0, sim.shape[0], block):
        b = min(a + block, sim.shape[0])
        rows = sim[a:b]
        gt = rows[np.arange(b - a), cv[a:b]]
        out[a:b] = (rows >= gt[:, None]).sum(axis=1) - 1
    return out


def ranks_video_to_text(sim, caption_video: np.ndarray, v2t: str = "groups", block: int = 1024) -> np.ndarray:
    """Multi-caption video->text, ``sim`` being [n_captions, n_videos]; ``v2t`` picks
    the convention (module docstring)."""
    if v2t not in V2T:
        raise ValueError(f"v2t must be one of {', '.join(V2T)}, not {v2t!r}")
    sim = _as_array(sim)
    cv = np.asarray(caption_video, dtype=np.int64)
    n_v = sim.shape[1]
    if cv.shape != (sim.shape[0],):
        raise ValueError(f"caption_video has {cv.shape}, similarity {sim.shape}")
    counts = np.bincount(cv, minlength=n_v)
    if (counts == 0).any():
        raise ValueError(f"video(s) {np.flatnonzero(counts == 0)[:5].tolist()} have no caption")
    if v2t == "groups":
        order = np.argsort(cv, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        out = np.empty(n_v, dtype=np.int64)
        for a in range(0, n_v, block):  # video blocks: [group, video] best-caption scores
            b = min(a + block, n_v)
            groups = np.maximum.reduceat(sim[order, a:b], starts, axis=0)
            gt = groups[np.arange(a, b), np.arange(b - a)]
            out[a:b] = (groups >= gt[None, :]).sum(axis=0) - 1
        return out
    best = np.full(n_v, -np.inf)
    np.maximum.at(best, cv, sim[np.arange(sim.shape[0]), cv])
    out = np.zeros(n_v, dtype=np.int64)
    for a in range(0, sim.shape[0], block):  # caption blocks: accumulate counts per video
        b = min(a + block, sim.shape[0])
        above = sim[a:b] >= best[None, :]
        above[np.arange(b - a), cv[a:b]] = False  # correct captions never count against
        out += above.sum(axis=0)
    return out


def retrieval_metrics(sim, caption_video: np.ndarray | None = None,
                      direction: str = "t2v", v2t: str = "groups") -> dict[str, float]:
    """``{R1, R5, R10, MdR, MnR}`` for one direction.

    Without ``caption_video``: single caption per video, correct pairs on the diagonal;
    ``direction="v2t"`` is the same as passing ``sim.T`` (CLIP4Clip's usage). With it:
    the multi-caption protocol, ``sim`` being [n_captions, n_videos] in both directions;
    video->text then follows ``v2t``: ``"groups"`` (CLIP4Clip's: each video ranks the
    videos' caption groups, a group scoring its best caption) or ``"captions"`` (its best
    caption ranked among all captions).
    """
    if direction not in ("t2v", "v2t"):
        raise ValueError(f"direction must be t2v or v2t, not {direction!r}")
    if caption_video is None:
        s = _as_array(sim)
        return rank_metrics(ranks_single(s if direction == "t2v" else s.T))
    if direction == "t2v":
        return rank_metrics(ranks_text_to_video(sim, caption_video), lower_median=True)
    return rank_metrics(ranks_video_to_text(sim, caption_video, v2t))


def retrieval_report(sim, caption_video: np.ndarray, single_rows: np.ndarray, protocol: str = "single") -> dict:
    """Both protocols from one [n_captions, n_videos] matrix; ``protocol`` (the store's:
    single, paragraph or multi) names the one the dataset is scored by.

    ``single_rows[v]`` is the caption row used for video ``v`` in the single-caption
    (1k-A style) protocol.
    """
    if protocol not in PRIMARY:
        raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PRIMARY)})")
    s = _as_array(sim)
    square = s[np.asarray(single_rows)]
    return {
        "protocol": protocol,
        "single": {"t2v": retrieval_metrics(square), "v2t": retrieval_metrics(square, direction="v2t")},
        "multi": {"t2v": retrieval_metrics(s, caption_video),
                  "v2t": retrieval_metrics(s, caption_video, direction="v2t")},
        "n_videos": int(s.shape[1]),
        "n_captions": int(s.shape[0]),
    }


def format_report(report: dict, title: str = "") -> str:
    """A small text table: one row per protocol and direction, the dataset's protocol first."""
    protocol = report.get("protocol", "single")
    lines = [title] if title else []
    lines.append(f"protocol: {protocol} ({PROTOCOL_NOTES[protocol]})")
    lines.append(f"{'protocol':<10}{'dir':<5}" + "".join(f"{k:>8}" for k in KEYS))
    primary = PRIMARY[protocol]
    for proto in (primary, *(p for p in ("single", "multi") if p != primary)):
        for d in ("t2v", "v2t"):
            m = report[proto][d]
            lines.append(f"{proto:<10}{d:<5}" + "".join(f"{m[k]:>8.1f}" for k in KEYS))
    lines.append(f"({report['n_videos']} videos, {report['n_captions']} captions)")
    return "\n".join(lines)
