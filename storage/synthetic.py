"""Synthetic stores for tests and benchmarks, written through the normal writers."""
from __future__ import annotations

import os

import numpy as np

from storage.schema import StoreLayout
from storage.store import create_store
from storage.writers import StepWriter


def create_synthetic_store(path: str | os.PathLike, n_videos: int, captions_per_video: int = 2,
                           *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
                           dataset: str = "synthetic", **layout_kw) -> StoreLayout:
    """An empty store with ids ``video0..``, seeded splits and placeholder captions."""
    rng = np.random.default_rng(seed)
    ids = [f"video{i}" for i in range(n_videos)]
    r = rng.random(n_videos)
    splits = np.where(r < test_fraction, "test", np.where(r < test_fraction + val_fraction, "val", "train"))
    cap_video = np.repeat(np.arange(n_videos), captions_per_video)
    cap_text = [f"caption {k} of video {v}" for k, v in enumerate(cap_video)]
    layout = StoreLayout(n_videos=n_videos, n_captions=len(cap_text), **layout_kw)
    return create_store(path, dataset=dataset, video_ids=ids, splits=splits.tolist(),
                        caption_text=cap_text, caption_video=cap_video, layout=layout,
                        video_paths=[f"videos/all/{i}.mp4" for i in ids])


def fill_random(path: str | os.PathLike, steps: tuple[str, ...] = ("frames",), seed: int = 0) -> None:
    """Random unit-norm-ish features for every item of ``steps``, block by block."""
    rng = np.random.default_rng(seed)
    for step in steps:
        w = StepWriter(path, step)
        L = w.layout
        for idx in w.pending_blocks():
            n = idx.size
            if step == "frames":
                mask = np.ones((n, L.n_frames), bool)
                mask[:, L.n_frames - 2:] = rng.random((n, 2)) < 0.7
                f = rng.standard_normal((n, L.n_frames, L.dim), dtype=np.float32) / np.sqrt(L.dim)
                data = {"frame_features": f * mask[..., None], "frame_mask": mask}
            elif step == "audio":
                has = rng.random(n) < 0.9
                a = rng.standard_normal((n, L.n_audio_tokens, L.audio_dim), dtype=np.float32)
                data = {"audio_tokens": a * has[:, None, None], "has_audio": has}
            elif step == "text":
                lengths = rng.integers(4, L.n_words + 1, n)
                mask = np.arange(L.n_words)[None, :] < lengths[:, None]
                tok = rng.standard_normal((n, L.n_words, L.dim), dtype=np.float32) / np.sqrt(L.dim)
                data = {"caption_tokens": tok * mask[..., None], "caption_mask": mask,
                        "caption_embedding": tok[np.arange(n), lengths - 1]}
            else:
                raise ValueError(f"fill_random does not fill step {step!r}")
            w.write(idx, data)
