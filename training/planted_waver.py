"""Planted-structure stores for WAVER: tags, a phrase table, writing styles and their
style-shifted captions, built on ``training.planted`` (tests, benchmarks, ``vtr ablate``).

Every video has a hidden code ``c`` split into a frame part and an audio part
(``audio_share``). Captions see the whole code through a random linear map ``w_text``
(the text space); frames see the frame part through that map bent by ``misalign``; audio
tokens see the audio part. Phrases have their own codes (frame part only: the teacher is
vision-language, it hears nothing); a phrase's embedding is its code through ``w_text``
(text side, like CLIP's text tower on "This is a video about ..."). Each video's tags
are ranked from its STORED frames exactly as the flow's tags step ranks them
(``tags_from_frames``), so tags carry nothing the frames lack: what they add is a view
of the frame content in the caption space (the frames are bent away from it), averaged
over the video's frames and phrases.

Writing styles (``n_styles``): each caption is written in one of ``n_styles`` styles, a
style being an offset added to all its token features inside a ``style_rank``-dim
subspace of the text space. Videos vary along the same subspace (``style_nuisance``):
the visual look that style words react to (footage-looking videos for "footage of").
A caption's style thus biases its scores towards the videos that look like its style,
while tags, being text in one fixed template, carry none of it. The style step's
variables (``storage.STYLE_VARIABLES``) hold each val/test video's first caption
rewritten in ``n_shift_styles`` unseen styles: same content, new offset.
"""
from __future__ import annotations

import os

import numpy as np

from storage import create_phrase_table, open_group, write_style_table
from storage.synthetic import write_step
from training.planted import audio_base, create_planted_manifest, write_planted_audio, write_planted_frames


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def tags_from_frames(frames: np.ndarray, frame_mask: np.ndarray, phrase_emb: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """The tags step's rule (``extractors/tags.py``: ``mean_frame_embedding`` then
    ``rank_tags``), restated because training may not import the extractors: phrases
    ranked by cosine against the mean of the video's valid frames, top ``k``, ties to the
    lower index. Returns indices ``[V, k]`` and their cosines."""
    f = np.asarray(frames, np.float32)
    m = np.asarray(frame_mask, bool)[..., None]
    mean = (f * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1)
    cos = _unit_rows(mean) @ _unit_rows(np.asarray(phrase_emb, np.float32)).T
    top = np.argsort(-cos, axis=1, kind="stable")[:, :k]
    return top.astype(np.int32), np.take_along_axis(cos, top, axis=1).astype(np.float32)


def write_waver_store(path: str | os.PathLike, n_videos: int, captions_per_video: int = 3, *,
                      splits: tuple[int, int, int] | None = None, code_dim: int = 16,
                      audio_share: float = 0.0, n_phrases: int = 256,
                      n_tags: int = 8, tag_noise: float = 0.1, no_tags_fraction: float = 0.0,
                      no_audio_fraction: float = 0.0, n_styles: int = 0, style_rank: int = 4,
                      style_scale: float = 1.0, style_nuisance: float = 1.0, style_tied: float = 0.0,
                      n_shift_styles: int = 3,
                      noise: float = 0.5, caption_noise: float = 0.3, dim: int = 64, audio_dim: int = 32,
                      n_frames: int = 12, n_audio_tokens: int = 16, n_words: int = 8,
                      padded_fraction: float = 0.3, misalign: float = 0.5, seed: int = 0,
                      dataset: str = "planted-waver") -> dict:
    """Write the store (frames, audio, text, tags, phrase table, style captions).

    Returns the codes and sizes. ``splits`` = train/val/test video counts (default
    80/10/10 %); ``no_tags_fraction`` of the videos get a failed tags step.
    """
    rng = np.random.default_rng(seed)
    split, cap_video, layout = create_planted_manifest(
        path, rng, n_videos, captions_per_video, splits, dataset, n_frames=n_frames, dim=dim,
        n_audio_tokens=n_audio_tokens, audio_dim=audio_dim, n_words=n_words, n_tags=n_tags)

    n_audio = int(round(audio_share * code_dim))
    n_frame = code_dim - n_audio
    if n_frame < 1:
        raise ValueError("audio_share leaves no code dimension for the frames")
    fr, au = slice(0, n_frame), slice(n_frame, code_dim)
    code = rng.standard_normal((n_videos, code_dim)).astype(np.float32)
    w_text = rng.standard_normal((code_dim, dim)).astype(np.float32) / np.sqrt(code_dim)
    w_frame = ((1 - misalign) * w_text[fr]
               + misalign * rng.standard_normal((n_frame, dim)).astype(np.float32) / np.sqrt(code_dim))
    w_audio = rng.standard_normal((max(1, n_audio), audio_dim)).astype(np.float32) / np.sqrt(code_dim)
    has_audio = rng.random(n_videos) >= no_audio_fraction
    # the style subspace; each writer's style; each video's group, whose look matches the
    # style of the writer who mostly describes that group (``style_tied``)
    basis = np.linalg.qr(rng.standard_normal((dim, style_rank)))[0].T.astype(np.float32)  # [rank, dim]
    unit = np.sqrt(dim / style_rank)
    coef = rng.standard_normal((max(1, n_styles), style_rank)).astype(np.float32)
    styles = style_scale * unit * coef[:n_styles] @ basis
    group = rng.integers(0, max(1, n_styles), n_videos)
    look = style_nuisance * unit * (coef[group] + 0.5 * rng.standard_normal((n_videos, style_rank),
                                                                            dtype=np.float32)) @ basis
    caption_style = np.full(cap_video.size, -1)
    if n_styles:
        tied = rng.random(cap_video.size) < style_tied
        caption_style = np.where(tied, group[cap_video], rng.integers(0, n_styles, cap_video.size))

    write_planted_frames(path, rng, layout, lambda idx: code[idx, fr] @ w_frame + (look[idx] if n_styles else 0),
                         noise, code_dim, padded_fraction)
    write_planted_audio(path, rng, layout, audio_base(code, au, w_audio, audio_dim), noise, code_dim, has_audio)

    # captions: content (all of the code) + noise, then the writer's style offset
    content = (code[cap_video] + caption_noise * rng.standard_normal((cap_video.size, code_dim), dtype=np.float32)) \
        @ w_text + noise * rng.standard_normal((cap_video.size, dim), dtype=np.float32) / np.sqrt(code_dim)
    lengths = rng.integers(2, n_words + 1, cap_video.size)
    word_mix = rng.random((cap_video.size, n_words)).astype(np.float32)  # how much of the sentence a word holds
    word_noise = rng.standard_normal((cap_video.size, n_words, dim), dtype=np.float32) * 0.5 / np.sqrt(code_dim)

    def tokens_of(rows: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        emb = content[rows] + offset
        mask = np.arange(n_words)[None, :] < lengths[rows, None]
        tok = emb[:, None, :] * word_mix[rows, :, None] + word_noise[rows]
        tok[np.arange(rows.size), lengths[rows] - 1] = emb  # the EOT token carries the sentence
        return emb, tok * mask[..., None], mask

    def text(idx):
        offset = styles[caption_style[idx]] if n_styles else np.zeros((idx.size, dim), np.float32)
        emb, tok, mask = tokens_of(idx, offset)
        return {"data": {"caption_embedding": emb, "caption_tokens": tok, "caption_mask": mask}}
    write_step(path, "text", text)

    # tags: phrases (frame part of a code) ranked against each video's stored frames
    phrase_code = np.zeros((n_phrases, code_dim), np.float32)
    phrase_code[:, fr] = rng.standard_normal((n_phrases, n_frame))
    phrase_emb = phrase_code @ w_text + tag_noise * rng.standard_normal((n_phrases, dim), dtype=np.float32)
    create_phrase_table(path, n_phrases)
    group = open_group(path, mode="r+")
    group["phrase_embedding"][:] = phrase_emb.astype(np.float16)
    group["phrase_count"][:] = np.full(n_phrases, 10, dtype=np.int32)
    group["phrase_text"][:] = np.array([f"doing thing {i}" for i in range(n_phrases)], dtype=str)
    top, top_cos = tags_from_frames(group["frame_features"][:], group["frame_mask"][:],
                                    group["phrase_embedding"][:], n_tags)
    no_tags = rng.random(n_videos) < no_tags_fraction

    def tags(idx):
        ok = idx[~no_tags[idx]]
        errors = {int(i): "planted: no tags for this video" for i in idx[no_tags[idx]]}
        data = {}
        if ok.size:
            ti = np.full((idx.size, n_tags), -1, np.int32)
            ts = np.zeros((idx.size, n_tags), np.float32)
            sel = ~no_tags[idx]
            ti[sel] = top[ok]
            ts[sel] = top_cos[ok]
            data = {"tag_index": ti, "tag_score": ts}
        return {"data": data, "errors": errors}
    write_step(path, "tags", tags)

    n_rows = 0
    if n_shift_styles:
        eval_videos = np.flatnonzero(split != "train")
        first = np.searchsorted(cap_video, eval_videos)  # captions are grouped by video
        source = np.repeat(first, n_shift_styles)
        which = np.tile(np.arange(n_shift_styles), first.size)
        if n_styles:  # the caption as the k-th next writer would have written it
            offset = styles[(caption_style[source] + 1 + which) % n_styles]
            names = np.array([f"writer+{k + 1}" for k in which])
        else:  # writers never seen in training
            offset = style_scale * unit * rng.standard_normal((n_shift_styles, style_rank),
                                                              dtype=np.float32) @ basis
            offset, names = offset[which], np.array([f"offset{k}" for k in which])
        emb, tok, mask = tokens_of(source, offset)
        write_style_table(path, source, names,
                             np.array([f"caption {s} in style {n}" for s, n in zip(source, names)]),
                             emb, tok, mask)
        n_rows = source.size
    return {"layout": layout, "code": code, "has_audio": has_audio, "split": split, "no_tags": no_tags,
            "parts": (n_frame, n_audio), "n_style_captions": n_rows}


__all__ = ["write_waver_store"]


def main(argv: list[str] | None = None) -> None:
    """``python -m training.planted_waver STORE``: the planted store of docs/results.md's table."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store")
    p.add_argument("--videos", type=int, default=600)
    p.add_argument("--captions", type=int, default=3)
    p.add_argument("--code-dim", type=int, default=8)
    p.add_argument("--audio-share", type=float, default=0.375)
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--styles", type=int, default=4, help="writers (0: no styles)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    n_test = n_val = a.videos // 8
    info = write_waver_store(a.store, a.videos, a.captions, splits=(a.videos - 2 * n_test, n_val, n_test),
                             code_dim=a.code_dim, audio_share=a.audio_share,
                             noise=a.noise, caption_noise=0.7 * a.noise, n_styles=a.styles,
                             style_tied=0.9, style_scale=0.6, style_nuisance=0.6, no_audio_fraction=0.1,
                             no_tags_fraction=0.05, seed=a.seed)
    print(f"wrote {a.store}: {a.videos} videos, code parts (frames, audio) = {info['parts']}, "
          f"{info['n_style_captions']} style-shifted captions")


if __name__ == "__main__":
    main()
