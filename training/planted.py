"""Synthetic stores with planted structure (tests, benchmarks), built on
``storage.synthetic``.

Every video gets a hidden code ``c`` (``code_dim`` Gaussian numbers). Its captions see
the whole code through one random linear map; its frames see the first part of the
code through the same map bent by ``misalign`` (a partly aligned joint space, like
CLIP's: zero-shot works a little, learning helps), and its audio tokens see the rest
through a third map (``audio_share`` = the fraction of code dimensions only audio
carries). Each view adds its own noise; with ``audio_share > 0`` only a head that uses
audio can recover the whole code. ``training.planted_waver`` adds tags, a phrase table
and writing styles on the same pieces.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from storage import StoreLayout
from storage.synthetic import create_synthetic_store, write_step


def create_planted_manifest(path: str | os.PathLike, rng: np.random.Generator, n_videos: int,
                            captions_per_video: int, splits: tuple[int, int, int] | None, dataset: str,
                            **layout) -> tuple[np.ndarray, np.ndarray, StoreLayout]:
    """Create the store (``storage.synthetic``); ``splits`` (train/val/test video counts,
    default 80/10/10 %) shuffled across the videos by ``rng``. Returns ``(split,
    caption_video, layout)``."""
    if splits is None:
        n_test = n_val = max(1, n_videos // 10)
        splits = (n_videos - n_val - n_test, n_val, n_test)
    if sum(splits) != n_videos:
        raise ValueError(f"splits {splits} do not add up to {n_videos} videos")
    split = np.array(["train"] * splits[0] + ["val"] * splits[1] + ["test"] * splits[2])
    rng.shuffle(split)
    lay = create_synthetic_store(path, n_videos, captions_per_video, splits=split.tolist(), dataset=dataset,
                                 **layout)
    return split, np.repeat(np.arange(n_videos), captions_per_video), lay


def write_planted_frames(path: str | os.PathLike, rng: np.random.Generator, layout: StoreLayout,
                         base: Callable[[np.ndarray], np.ndarray], noise: float, code_dim: int,
                         padded_fraction: float) -> None:
    """Frames step: ``base(indices)`` ([n, dim]) on every frame plus noise; a
    ``padded_fraction`` of the videos keep only their first 1..n_frames frames."""
    n_frames, dim = layout.n_frames, layout.dim

    def rows(idx):
        n = idx.size
        f = base(idx)[:, None, :] + noise * rng.standard_normal((n, n_frames, dim), dtype=np.float32) \
            / np.sqrt(code_dim)
        n_valid = np.where(rng.random(n) < padded_fraction, rng.integers(1, n_frames + 1, n), n_frames)
        mask = np.arange(n_frames)[None, :] < n_valid[:, None]
        return {"data": {"frame_features": f * mask[..., None], "frame_mask": mask}}
    write_step(path, "frames", rows)


def write_planted_audio(path: str | os.PathLike, rng: np.random.Generator, layout: StoreLayout,
                        base: Callable[[np.ndarray], np.ndarray], noise: float, code_dim: int,
                        has_audio: np.ndarray) -> None:
    """Audio step: ``base(indices)`` ([n, audio_dim]) on every token plus noise, each token
    standardised; videos without ``has_audio`` get zeros."""
    n_tokens, audio_dim = layout.n_audio_tokens, layout.audio_dim

    def rows(idx):
        n = idx.size
        a = base(idx)[:, None, :] + noise * rng.standard_normal((n, n_tokens, audio_dim), dtype=np.float32) \
            / np.sqrt(code_dim)
        a = a / a.std(axis=-1, keepdims=True)  # AST tokens come after a LayerNorm
        return {"data": {"audio_tokens": a * has_audio[idx, None, None], "has_audio": has_audio[idx]}}
    write_step(path, "audio", rows)


def audio_base(code: np.ndarray, part: slice, w_audio: np.ndarray, audio_dim: int):
    """``base`` of ``write_planted_audio``: the code's audio ``part`` through ``w_audio``
    (zeros when the part is empty)."""
    n_part = part.stop - part.start

    def base(idx):
        if n_part:
            return code[idx, part] @ w_audio[:n_part]
        return np.zeros((idx.size, audio_dim), np.float32)
    return base


def write_planted_store(path: str | os.PathLike, n_videos: int, captions_per_video: int = 2, *,
                        splits: tuple[int, int, int] | None = None, code_dim: int = 16,
                        audio_share: float = 0.0, no_audio_fraction: float = 0.0,
                        noise: float = 0.5, caption_noise: float = 0.3, dim: int = 64,
                        audio_dim: int = 32, n_frames: int = 12, n_audio_tokens: int = 16,
                        n_words: int = 8, padded_fraction: float = 0.3, misalign: float = 0.5, seed: int = 0,
                        dataset: str = "planted") -> dict:
    """Write the store; returns the codes and sizes (``splits`` = train/val/test video
    counts, default 80/10/10 %). Videos are shuffled across splits in store order."""
    rng = np.random.default_rng(seed)
    split, cap_video, layout = create_planted_manifest(
        path, rng, n_videos, captions_per_video, splits, dataset, n_frames=n_frames, dim=dim,
        n_audio_tokens=n_audio_tokens, audio_dim=audio_dim, n_words=n_words)

    n_audio_code = int(round(audio_share * code_dim))
    n_frame_code = code_dim - n_audio_code
    code = rng.standard_normal((n_videos, code_dim)).astype(np.float32)
    w_text = rng.standard_normal((code_dim, dim)).astype(np.float32) / np.sqrt(code_dim)
    # frames live in the caption space (as CLIP's towers do), bent by ``misalign``
    w_frame = ((1 - misalign) * w_text[:max(1, n_frame_code)]
               + misalign * rng.standard_normal((max(1, n_frame_code), dim)).astype(np.float32) / np.sqrt(code_dim))
    w_audio = rng.standard_normal((max(1, n_audio_code), audio_dim)).astype(np.float32) / np.sqrt(code_dim)
    has_audio = rng.random(n_videos) >= no_audio_fraction

    write_planted_frames(path, rng, layout, lambda idx: code[idx, :n_frame_code] @ w_frame[:n_frame_code],
                         noise, code_dim, padded_fraction)
    write_planted_audio(path, rng, layout, audio_base(code, slice(n_frame_code, code_dim), w_audio, audio_dim),
                        noise, code_dim, has_audio)

    def text(idx):
        n = idx.size
        c = code[cap_video[idx]] + caption_noise * rng.standard_normal((n, code_dim), dtype=np.float32)
        emb = c @ w_text + noise * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(code_dim)
        lengths = rng.integers(2, n_words + 1, n)
        mask = np.arange(n_words)[None, :] < lengths[:, None]
        tokens = np.zeros((n, n_words, dim), np.float32)
        tokens[np.arange(n), lengths - 1] = emb  # the EOT token carries the sentence
        return {"data": {"caption_embedding": emb, "caption_tokens": tokens, "caption_mask": mask}}
    write_step(path, "text", text)
    return {"layout": layout, "code": code, "has_audio": has_audio, "split": split,
            "n_audio_code": n_audio_code}
