"""Synthetic stores for tests and benchmarks, written through the normal writers.

``create_synthetic_store`` writes the manifest (ids ``video0..``, placeholder captions
and paths, splits); ``write_step`` fills one step block by block; ``fill_random`` fills
steps with random features. The planted-structure stores (``training.planted``) build on
the first two.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from storage.schema import StoreLayout
from storage.store import create_store, layout_of
from storage.writers import StepWriter


def create_synthetic_store(path: str | os.PathLike, n_videos: int, captions_per_video: int = 2,
                           *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
                           splits: Sequence[str] | None = None, dataset: str = "synthetic",
                           **layout_kw) -> StoreLayout:
    """An empty store with ids ``video0..``, placeholder captions (video ``v`` has captions
    ``v * captions_per_video ...``) and ``splits`` (one name per video; default: drawn
    from ``seed`` with the given fractions)."""
    if splits is None:
        r = np.random.default_rng(seed).random(n_videos)
        splits = np.where(r < test_fraction, "test", np.where(r < test_fraction + val_fraction, "val", "train"))
    ids = [f"video{i}" for i in range(n_videos)]
    cap_video = np.repeat(np.arange(n_videos), captions_per_video)
    cap_text = [f"caption {k} of video {v}" for k, v in enumerate(cap_video)]
    layout = StoreLayout(n_videos=n_videos, n_captions=len(cap_text), **layout_kw)
    return create_store(path, dataset=dataset, video_ids=ids, splits=list(splits),
                        caption_text=cap_text, caption_video=cap_video, layout=layout,
                        video_paths=[f"videos/all/{i}.mp4" for i in ids])


def write_step(path: str | os.PathLike, step: str, rows: Callable[[np.ndarray], dict]) -> None:
    """Fill every pending item of ``step``, one owned block at a time: ``rows(indices)``
    returns the keyword arguments of ``StepWriter.write`` (``data``, ``errors``)."""
    w = StepWriter(path, step)
    for idx in w.pending_blocks():
        w.write(idx, **rows(idx))


def fill_random(path: str | os.PathLike, steps: tuple[str, ...] = ("frames",), seed: int = 0) -> None:
    """Random unit-norm-ish features for every item of ``steps``, block by block."""
    rng = np.random.default_rng(seed)
    L = layout_of(path)

    def frames(idx):
        n = idx.size
        mask = np.ones((n, L.n_frames), bool)
        mask[:, L.n_frames - 2:] = rng.random((n, 2)) < 0.7
        f = rng.standard_normal((n, L.n_frames, L.dim), dtype=np.float32) / np.sqrt(L.dim)
        return {"data": {"frame_features": f * mask[..., None], "frame_mask": mask}}

    def audio(idx):
        n = idx.size
        has = rng.random(n) < 0.9
        a = rng.standard_normal((n, L.n_audio_tokens, L.audio_dim), dtype=np.float32)
        return {"data": {"audio_tokens": a * has[:, None, None], "has_audio": has}}

    def text(idx):
        n = idx.size
        lengths = rng.integers(4, L.n_words + 1, n)
        mask = np.arange(L.n_words)[None, :] < lengths[:, None]
        tok = rng.standard_normal((n, L.n_words, L.dim), dtype=np.float32) / np.sqrt(L.dim)
        return {"data": {"caption_tokens": tok * mask[..., None], "caption_mask": mask,
                         "caption_embedding": tok[np.arange(n), lengths - 1]}}

    fillers = {"frames": frames, "audio": audio, "text": text}
    for step in steps:
        if step not in fillers:
            raise ValueError(f"fill_random does not fill step {step!r}")
        write_step(path, step, fillers[step])
