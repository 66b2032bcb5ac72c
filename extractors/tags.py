"""Open-vocabulary tags for WAVER: phrases mined from TRAINING captions, encoded once with
the CLIP text tower, ranked per video against the mean frame embedding.

Mining has no POS tagger (none is installed, none can be downloaded): a phrase is an
n-gram (2..5 tokens) whose first token is verb-like by a small lexicon plus morphology
(``-ing`` forms, and ``-s``/``-ed`` forms of known verbs), and whose last token is not a
function word ("playing the" is cut, "playing the guitar" kept). Only captions of videos in
the ``train`` split are read, so no validation/test wording leaks into the vocabulary.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

PHRASE_TEMPLATE = "This is a video about {phrase}."

_BASE_VERBS = """
add answer apply ask bake bang bark bathe beat bend bite blow boil bounce bow box brush build
burn buy call carry catch chase check cheer chop clap clean climb close comb compete cook count
crawl cross cry cut dance demonstrate describe dig discuss dive do draw dress drink drive drop
eat enjoy examine exercise explain fall feed fight fill film find fix float fly fold follow
get give go grab grow hang help hit hold hug hunt interview jump kick kiss knit laugh lay lead
lean lie lift listen load look make march mix move open paint perform pet pick place plant
play point pour practice prepare present press pull punch push put race read relax repair
review ride roll rub run say score scream see sell serve sew shake shave shoot shop show sing
sit skate ski sleep slice slide smile speak spin stand stare start stir surf swim swing take
talk taste teach tell test throw tie touch train travel try turn type unbox use walk wash
watch wave wear win work wrestle write yell
"""
_IRREGULAR = """
ate beaten began bit blew bought built caught chose came cut did done drank drew driven drove
eaten fell felt fought flew found gave given got gone grew held hit hung kept knew laid led
left lost made met paid put ran read rode said sang sat saw seen sold sent shot showed shown
sang spoke stood swam swung taken taught thought threw thrown told took wore won wrote written
"""
# -ing words that are (nearly always) nouns in captions
_NOT_VERBS = set("""
anything awning bedding building ceiling clothing darling during evening everything
king morning nothing offering pudding ring sibling something spring string thing wedding wing
""".split())
_FUNCTION_WORDS = set("""
a an the of to and or but in on at by for with from into onto over under about as is are was
were be been being his her their its my your our this that these those some while who which
what when where how very so then there here it he she they we you i him them me us not no
""".split())
_TOKEN = re.compile(r"[a-z][a-z']*")


def _verb_forms() -> set[str]:
    forms = set(_IRREGULAR.split())
    for v in _BASE_VERBS.split():
        stem = v[:-1] if v.endswith("e") and not v.endswith("ee") else v
        forms |= {v, v + "s", v + "es", stem + "ing", stem + "ed", v + "ed", v[:-1] + "ies" if v.endswith("y") else v}
        if re.fullmatch(r".*[^aeiou][aeiou][bdgmnprt]", v) and len(v) <= 4:  # run -> running
            forms |= {v + v[-1] + "ing", v + v[-1] + "ed"}
    return forms


VERB_FORMS = frozenset(_verb_forms())


def tokenize_caption(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def is_verb_like(token: str) -> bool:
    if token in _NOT_VERBS:
        return False
    if token in VERB_FORMS:
        return True
    return len(token) >= 5 and token.endswith("ing")


def mine_phrases(train_captions: Iterable[str], *, min_count: int, n_min: int = 2, n_max: int = 5,
                 max_phrases: int | None = None) -> list[tuple[str, int]]:
    """``(phrase, count)`` sorted by count (desc) then text: deterministic for a caption set.

    Counts are per caption (an n-gram repeated inside one caption counts once).
    """
    if not 1 <= n_min <= n_max:
        raise ValueError("need 1 <= n_min <= n_max")
    counts: Counter[str] = Counter()
    for text in train_captions:
        toks = tokenize_caption(text)
        seen = set()
        for i, t in enumerate(toks):
            if not is_verb_like(t):
                continue
            for n in range(n_min, n_max + 1):
                gram = toks[i:i + n]
                if len(gram) < n:
                    break
                if gram[-1] in _FUNCTION_WORDS:
                    continue
                seen.add(" ".join(gram))
        counts.update(seen)
    items = sorted(((p, c) for p, c in counts.items() if c >= min_count), key=lambda pc: (-pc[1], pc[0]))
    return items[:max_phrases] if max_phrases else items


def encode_phrases(encoder, phrases: list[str], *, batch_size: int,
                   template: str = PHRASE_TEMPLATE) -> np.ndarray:
    """EOT embeddings ``[P, D]`` float32 of ``template`` filled with each phrase."""
    from extractors.engine import encode_captions

    out = np.zeros((len(phrases), encoder.dim), dtype=np.float32)
    texts = [template.format(phrase=p) for p in phrases]
    for r in encode_captions(encoder, texts, batch_size=batch_size, progress=False):
        out[r.index] = r.data["caption_embedding"]
    return out


def mean_frame_embedding(frame_features: np.ndarray, frame_mask: np.ndarray) -> np.ndarray:
    """Mean over sampled frames ``[V, D]`` (zero where a video has none)."""
    f = np.asarray(frame_features, dtype=np.float32)
    m = np.asarray(frame_mask, dtype=bool)[..., None]
    n = m.sum(axis=1)
    return (f * m).sum(axis=1) / np.maximum(n, 1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def rank_tags(video_emb: np.ndarray, phrase_emb: np.ndarray, k: int = 30,
              chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` phrases per video by cosine: indices ``[V, k]`` int32 (-1 past the table)
    and scores ``[V, k]`` float32 (0 there). Ties go to the lower phrase index."""
    v = _unit(np.asarray(video_emb, dtype=np.float32))
    p = _unit(np.asarray(phrase_emb, dtype=np.float32))
    n_v, n_p = v.shape[0], p.shape[0]
    kk = min(k, n_p)
    idx = np.full((n_v, k), -1, dtype=np.int32)
    score = np.zeros((n_v, k), dtype=np.float32)
    for s in range(0, n_v, chunk):
        sim = v[s:s + chunk] @ p.T
        top = np.argsort(-sim, axis=1, kind="stable")[:, :kk]
        idx[s:s + chunk, :kk] = top
        score[s:s + chunk, :kk] = np.take_along_axis(sim, top, axis=1)
    return idx, score
