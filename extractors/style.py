"""The style step: deterministic writing-style rewrites of captions, encoded once by the
store's CLIP text tower, so that training can measure how far a head's score moves when
only the writing changes (``vtr eval --style-shift``).

Rewrites (``REWRITES``, pure text functions; the random ones are seeded by (seed, caption
index), so a store's rewrites never change between runs) keep the meaning and change
the writing: ``footage`` ("footage of ..."), ``clip_where`` ("a clip where ..."),
``casing`` (upper case: a control, CLIP's tokenizer lower-cases, so its gap should be
~0), ``punctuation`` (sentence case and a full stop, or both removed), ``person``
("a man"/"a woman"/... -> "someone", "someone" -> "a person"), ``word_drop`` (each word
dropped with probability 0.15, never all). A third view needs no rewrite: the other
captions of the same video ("other writers"), already in the store.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

# --- rewrites ---------------------------------------------------------------------------
def _body(text: str) -> str:
    """The caption without trailing punctuation, first letter lower-cased."""
    t = text.strip().rstrip(".!?;, ")
    return t[:1].lower() + t[1:]


def footage(text: str, rng: np.random.Generator) -> str:
    return f"footage of {_body(text)}"


def clip_where(text: str, rng: np.random.Generator) -> str:
    return f"a clip where {_body(text)}"


def casing(text: str, rng: np.random.Generator) -> str:
    return text.upper()


def punctuation(text: str, rng: np.random.Generator) -> str:
    t = text.strip()
    if re.search(r"[.!?]$", t) or t[:1].isupper():
        return _body(t)
    return t[:1].upper() + t[1:] + "."


_PERSON = re.compile(r"\b(a (?:man|woman|boy|girl|guy|lady|person)|some(?:one|body))\b", re.IGNORECASE)


def person(text: str, rng: np.random.Generator) -> str:
    return _PERSON.sub(lambda m: "a person" if m.group(1).lower().startswith("some") else "someone", text)


def word_drop(text: str, rng: np.random.Generator, p: float = 0.15) -> str:
    words = text.split()
    if len(words) <= 2:
        return text
    keep = rng.random(len(words)) >= p
    if not keep.any():
        keep[0] = True
    return " ".join(w for w, k in zip(words, keep) if k)


REWRITES: dict[str, Callable[[str, np.random.Generator], str]] = {
    "footage": footage, "clip_where": clip_where, "casing": casing,
    "punctuation": punctuation, "person": person, "word_drop": word_drop,
}


def rewrite(text: str, style: str, index: int, seed: int = 0) -> str:
    """Caption ``text`` (store caption ``index``) in style ``style``; deterministic."""
    try:
        fn = REWRITES[style]
    except KeyError:
        raise KeyError(f"unknown style {style!r} (known: {', '.join(REWRITES)})") from None
    return fn(text, np.random.default_rng([seed, index]))


def plan_rewrites(caption_text: Sequence[str], caption_video: np.ndarray, split: Sequence[str],
                  splits: Sequence[str] = ("test",), styles: Sequence[str] = tuple(REWRITES),
                  first_only: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of the style step: ``(source caption index, style, rewritten text)``.

    Captions of videos in ``splits``; with ``first_only`` only each video's first caption
    (the single-caption query of 1k-A), which keeps the rows at n_videos x n_styles.
    """
    cv = np.asarray(caption_video, dtype=np.int64)
    split = np.asarray(split)
    sources = np.flatnonzero(np.isin(split[cv], list(splits)))
    if first_only:
        _, first = np.unique(cv[sources], return_index=True)
        sources = sources[np.sort(first)]
    rows = [(int(i), s, rewrite(str(caption_text[i]), s, int(i), seed)) for i in sources for s in styles]
    return (np.array([r[0] for r in rows], dtype=np.int32), np.array([r[1] for r in rows], dtype=str),
            np.array([r[2] for r in rows], dtype=str))
