"""Writing-style robustness: the style-shift score of a trained head.

The rewritten captions (``extractors.style``: "footage of ...", casing, person words,
word drops, ...) must be encoded by the store's own CLIP text tower, which training may
not import: their features are an extraction product, kept in the store as the
``style_caption_*`` variables (``storage.STYLE_VARIABLES``, one row per rewrite of one
source caption). ``style_report`` scores a head on them: text->video metrics of the
rewritten captions against the same source captions unchanged, and the gap (plain minus
rewritten R@1) per style. A third view needs no rewrite: the other captions of the same
video ("other writers"), already in the store.
"""
from __future__ import annotations

import numpy as np

from storage import STYLE_VARIABLES, StoreError, as_str, open_store
from training.data import load_arrays, select_split
from training.evaluate import prepare_eval, similarity_matrix
from training.metrics import rank_metrics, ranks_text_to_video

MISSING_HINT = "run `vtr extract --steps style` first"


# --- scoring ----------------------------------------------------------------------------
def load_style_captions(store: str, captions: np.ndarray) -> dict[str, np.ndarray]:
    """The style rows whose source is one of the store captions ``captions``:
    ``text``, ``text_tokens``, ``text_mask`` (float32 features), ``source_row`` (index
    into ``captions``) and ``style``. A clear error when the store has no style step."""
    ds = open_store(store)
    missing = [v for v in STYLE_VARIABLES if v not in ds.variables]
    if missing:
        raise StoreError(f"{store}: no style-shifted captions (no {missing[0]}); {MISSING_HINT}")
    source = ds["style_caption_source"].values.astype(np.int64)
    row_of = np.full(int(ds.sizes["caption"]), -1, dtype=np.int64)
    row_of[np.asarray(captions)] = np.arange(len(captions))
    ok = (source >= 0) & (source < row_of.size)
    rows = np.flatnonzero(ok)
    rows = rows[row_of[source[rows]] >= 0]
    if rows.size == 0:
        raise StoreError(f"{store}: no style-shifted caption belongs to this split; {MISSING_HINT}")
    return {
        "text": ds["style_caption_embedding"].data[rows].compute().astype(np.float32),
        "text_tokens": ds["style_caption_tokens"].data[rows].compute().astype(np.float32),
        "text_mask": np.asarray(ds["style_caption_mask"].data[rows].compute()),
        "source_row": row_of[source[rows]],
        "style": as_str(ds["style_caption_style"].values[rows]),
    }


def style_report(head, store: str, data, audio, device, batch_size: int = 256, amp: bool = True) -> dict:
    """Style-shift metrics of ``head`` on split ``data`` (a ``training.data.SplitData``).

    ``{"plain": t2v metrics of the rewritten captions' sources, "styles": {style: t2v
    metrics}, "gap": {style: plain R@1 - style R@1}, "mean_gap", "writers": {...} or
    None}``. ``writers`` compares each video's first caption (the single-caption query)
    with its other captions: ``{"first", "others", "gap"}``.
    """
    arrays = load_arrays(store, data, head.text_fields + head.video_fields, audio)
    styled = load_style_captions(store, data.captions)
    n_plain = data.n_captions
    # plain and rewritten captions in one matrix: every video is encoded once
    for f in head.text_fields:
        arrays[f] = np.concatenate([arrays[f], styled[f].astype(arrays[f].dtype)])
    cv = data.caption_video
    all_cv = np.concatenate([cv, cv[styled["source_row"]]])
    sim = similarity_matrix(head, arrays, device, batch_size, amp=amp)
    ranks = ranks_text_to_video(sim, all_cv)
    plain_ranks, style_ranks = ranks[:n_plain], ranks[n_plain:]

    report: dict = {"styles": {}, "gap": {}}
    report["plain"] = rank_metrics(plain_ranks[np.unique(styled["source_row"])])
    for s in sorted(set(styled["style"].tolist())):
        sel = styled["style"] == s
        m = rank_metrics(style_ranks[sel])
        # the same sources as this style's rows, so a style missing for some captions
        # is compared on equal terms
        base = rank_metrics(plain_ranks[styled["source_row"][sel]])
        report["styles"][s] = m
        report["gap"][s] = base["R1"] - m["R1"]
    report["mean_gap"] = float(np.mean(list(report["gap"].values())))
    report["writers"] = _writers(plain_ranks, data)
    report["n_style_captions"] = int(style_ranks.size)
    return report


def writers_report(head, store: str, data, audio, device, batch_size: int = 256, amp: bool = True) -> dict | None:
    """The "other writers" view alone (needs no style step): first caption vs the others."""
    arrays = load_arrays(store, data, head.text_fields + head.video_fields, audio)
    sim = similarity_matrix(head, arrays, device, batch_size, amp=amp)
    return _writers(ranks_text_to_video(sim, data.caption_video), data)


def _writers(ranks: np.ndarray, data) -> dict | None:
    """Each video's first caption (the single-caption query) against its other captions."""
    first = data.first_captions()
    others = np.setdiff1d(np.arange(data.n_captions), first)
    if not others.size:
        return None
    f_m, o_m = rank_metrics(ranks[first]), rank_metrics(ranks[others])
    return {"first": f_m, "others": o_m, "gap": f_m["R1"] - o_m["R1"]}


def format_style_report(report: dict, title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'captions':<22}{'R1':>8}{'R5':>8}{'R10':>8}{'MdR':>8}{'gap R1':>9}")
    p = report["plain"]
    lines.append(f"{'plain (sources)':<22}{p['R1']:>8.1f}{p['R5']:>8.1f}{p['R10']:>8.1f}{p['MdR']:>8.1f}{'':>9}")
    for s, m in report["styles"].items():
        lines.append(f"{s:<22}{m['R1']:>8.1f}{m['R5']:>8.1f}{m['R10']:>8.1f}{m['MdR']:>8.1f}"
                     f"{report['gap'][s]:>9.1f}")
    lines.append(f"mean style-shift gap (text->video R@1): {report['mean_gap']:.1f}")
    w = report.get("writers")
    if w:
        lines.append(f"other writers: first caption R@1 {w['first']['R1']:.1f}, other captions "
                     f"R@1 {w['others']['R1']:.1f}, gap {w['gap']:.1f}")
    return "\n".join(lines)


def evaluate_style_shift(store: str, run: str, split: str = "test", device: str = "auto",
                         progress: bool = True) -> dict:
    """``style_report`` of a run's best head on one split of the store it was trained on."""
    head, _, tc, audio, dev = prepare_eval(store, run, device, progress)
    return style_report(head, store, select_split(store, split), audio, dev, tc.eval_batch_size, tc.amp)
