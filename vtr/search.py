"""Text search over a store's videos, scored by a trained head (the library behind
`vtr search` and `vtr index`, ``vtr.commands.search``).

The query is encoded by the CLIP text tower that encoded the store's captions (the model,
weights file and sha256 recorded in the store's ``text`` provenance; a RANDOM-INIT store is
re-created from the recorded seed), then rounded to float16 as the store holds captions,
so a query that copies a caption gets exactly that caption's feature.

Without an index every video (frames done) is scored exactly, streamed in blocks of
videos so the store need not fit in memory. ``vtr index`` writes a FAISS inner-product
index over the head's text-independent video vectors (``Head.index_vectors``; meanpool:
the video embedding; AVIGATE: the global embedding; WAVER: the token-weighted frame
mean) to ``RUN/index.faiss`` + ``RUN/index.json``; ``search``
with ``--index`` takes its top ``k * 10`` candidates and re-ranks only those exactly with
the head's similarity.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from storage import DONE, as_str, open_group, read_attrs
from training.data import SplitData, load_arrays, store_identity
from training.evaluate import encode_videos, prepare_eval

BLOCK = 1024  # videos loaded and encoded at a time
RERANK_FACTOR = 10


class SearchError(Exception):
    """A query, store, run or index that cannot be searched (one line, naming the path)."""


# --- the query side ---------------------------------------------------------------------
def text_encoder_for(store: str, device: str = "cpu"):
    """The CLIP encoder recorded in the store's ``text`` provenance."""
    from extractors.clip_encoder import create_clip_encoder
    from extractors.weights import WeightsError
    from storage.provenance import is_random_init

    rec = read_attrs(store).get("provenance", {}).get("text")
    if not rec or "config" not in rec:
        raise SearchError(f"{store}: no provenance for the text features (the text step never ran, "
                          "or an old store): which CLIP encoded the captions is unknown")
    cfg = rec["config"]
    kw = dict(model=cfg["model"], context_length=int(cfg.get("context_length", 32)), device=device)
    if is_random_init(rec):
        kw.update(random_init=True, seed=int(cfg.get("seed", 0)))
    else:
        weights = rec.get("weights")
        if not weights or not os.path.isfile(weights):
            raise SearchError(f"{weights}: the CLIP weights recorded in {store}'s text provenance "
                              "are not there (move them back, or re-extract)")
        kw.update(weights=weights, expected_sha256=rec.get("weights_sha256"))
    try:
        return create_clip_encoder(**kw)
    except WeightsError as e:
        raise SearchError(f"{e} (recorded in {store}'s text provenance)") from None


def encode_query(encoder, query: str) -> dict[str, torch.Tensor]:
    """Batch fields ``text``, ``text_tokens``, ``text_mask`` for one query, rounded to the
    store's float16 so they equal a stored caption of the same text."""
    if not query or not query.strip():
        raise SearchError("empty query: give a sentence, e.g. vtr search ... \"a man is cooking\"")
    out = encoder.encode_texts([query.strip()])
    return {"text": out["caption_embedding"].half().float().cpu(),
            "text_tokens": out["caption_tokens"].half().float().cpu(),
            "text_mask": out["caption_mask"].cpu()}


# --- the video side ---------------------------------------------------------------------
def searchable_videos(store: str) -> np.ndarray:
    """Store indices of the videos a head can score: frames extracted."""
    g = open_group(store, mode="r")
    return np.flatnonzero(np.asarray(g["frames_state"][:]) == DONE)


def _video_data(videos: np.ndarray) -> SplitData:
    empty = np.zeros(0, dtype=np.int64)
    return SplitData("search", np.asarray(videos, dtype=np.int64), empty, empty)


def _encode_videos(head, store: str, videos: np.ndarray, audio, device: torch.device):
    """Head representations of ``videos`` (store indices), in that order."""
    return encode_videos(head, load_arrays(store, _video_data(videos), head.video_fields, audio), device)


class Searcher:
    """A run's head, its store and the query encoder, loaded once for many queries."""

    def __init__(self, store: str, run: str, device: str = "cpu", progress: bool = False,
                 checkpoint: str = "head"):
        self.store, self.run = store, run
        if checkpoint not in ("head", "last"):
            raise SearchError(f"checkpoint must be head (best on val) or last, not {checkpoint!r}")
        self.head, self.cfg, _, self.audio, self.device = prepare_eval(store, run, device, progress, checkpoint)
        self.head.eval()
        self.encoder = text_encoder_for(store, "cpu")
        g = open_group(store, mode="r")
        self.ids = as_str(g["video"][:])
        self.split = as_str(g["split"][:])
        self.paths = as_str(g["video_path"][:])
        self.root = str(read_attrs(store).get("data_root", ""))

    def text_repr(self, query: str):
        q = encode_query(self.encoder, query)
        batch = {k: q[k].to(self.device) for k in self.head.text_fields}
        return self.head.encode_text(batch)

    @torch.no_grad()
    def score(self, query: str, videos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(store indices, scores) of ``videos`` (default: all searchable), exact."""
        t = self.text_repr(query)
        videos = searchable_videos(self.store) if videos is None else np.asarray(videos)
        scores = np.empty(videos.size, dtype=np.float32)
        for a in range(0, videos.size, BLOCK):
            v = self._video_repr(videos[a:a + BLOCK])
            scores[a:a + BLOCK] = self.head.similarity(t, v)[0].float().cpu().numpy()
        return videos, scores

    def _video_repr(self, videos: np.ndarray):
        return _encode_videos(self.head, self.store, videos, self.audio, self.device)

    def search(self, query: str, k: int = 5, index: str | None = None) -> list[dict]:
        """Top ``k`` videos: ``rank, id, index, split, score, path``; with ``index`` only its
        top ``k * RERANK_FACTOR`` candidates are scored exactly."""
        if k < 1:
            raise SearchError(f"k must be >= 1, got {k}")
        candidates = None
        if index is not None:
            candidates = self.candidates(query, index, k * RERANK_FACTOR)
        videos, scores = self.score(query, candidates)
        order = np.argsort(-scores, kind="stable")[:k]
        return [{"rank": r + 1, "id": str(self.ids[videos[i]]), "index": int(videos[i]),
                 "split": str(self.split[videos[i]]), "score": float(scores[i]),
                 "path": self._path(videos[i])} for r, i in enumerate(order)]

    def _path(self, i: int) -> str:
        p = str(self.paths[i])
        return p if os.path.isabs(p) or "://" in p or not self.root else os.path.join(self.root, p)

    @torch.no_grad()
    def candidates(self, query: str, index: str, n: int) -> np.ndarray:
        faiss_index, meta = read_index(index, self.store, self.run)
        q = _query_vector(self.text_repr(query)).float().cpu().numpy()
        q = q / np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12)
        _, rows = faiss_index.search(np.ascontiguousarray(q, dtype=np.float32), min(n, faiss_index.ntotal))
        rows = rows[0][rows[0] >= 0]
        return np.sort(np.asarray(meta["videos"], dtype=np.int64)[rows])


def _query_vector(text_repr) -> torch.Tensor:
    """The query's side of ``Head.index_vectors``: the text embedding, or for token-level
    heads (WAVER: tokens, mask, weights) the weight-pooled tokens, as its videos' index
    vectors pool their frames."""
    if isinstance(text_repr, torch.Tensor):
        return text_repr
    return (text_repr["weights"][..., None].float() * text_repr["tokens"].float()).sum(1)


# --- the index --------------------------------------------------------------------------
def index_paths(run: str) -> tuple[str, str]:
    return os.path.join(run, "index.faiss"), os.path.join(run, "index.json")


@torch.no_grad()
def build_index(store: str, run: str, device: str = "cpu", progress: bool = True) -> str:
    """Write ``RUN/index.faiss`` (inner product over normalised candidate vectors of every
    searchable video) and ``RUN/index.json`` (store indices, ids, store and head)."""
    import faiss
    from tqdm import tqdm

    head, cfg, _, audio, dev = prepare_eval(store, run, device, progress)
    head.eval()
    videos = searchable_videos(store)
    if videos.size == 0:
        raise SearchError(f"{store}: no video has its frames extracted; nothing to index")
    index = None
    for a in tqdm(range(0, videos.size, BLOCK), desc="indexing", unit="block", disable=not progress):
        vec = head.index_vectors(_encode_videos(head, store, videos[a:a + BLOCK], audio, dev))
        vec = torch.nn.functional.normalize(vec.float(), dim=-1).cpu().numpy()
        if index is None:
            index = faiss.IndexFlatIP(vec.shape[1])
        index.add(np.ascontiguousarray(vec, dtype=np.float32))
    path, meta_path = index_paths(run)
    faiss.write_index(index, path + ".tmp")
    os.replace(path + ".tmp", path)
    ids = as_str(open_group(store, mode="r")["video"][:])
    meta = {"store": store_identity(store), "head": cfg["head"],
            "head_mtime": os.path.getmtime(os.path.join(run, "head.safetensors")),
            "videos": videos.tolist(), "ids": ids[videos].tolist()}
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f)
    os.replace(meta_path + ".tmp", meta_path)
    return path


def read_index(path: str, store: str, run: str):
    import faiss
    meta_path = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(path) or not os.path.isfile(meta_path):
        raise SearchError(f"{path}: no index there (build it: vtr index --store {store} --run {run})")
    with open(meta_path) as f:
        meta = json.load(f)
    ident = store_identity(store)
    if any(ident[k] != meta["store"][k] for k in ("dataset", "created", "n_videos", "n_captions")):
        raise SearchError(f"{path}: built on store {meta['store']['path']}, not on {store}: rebuild it")
    head_file = os.path.join(run, "head.safetensors")
    if os.path.getmtime(head_file) != meta["head_mtime"]:
        raise SearchError(f"{path}: built from an older {head_file}: rebuild it (vtr index)")
    index = faiss.read_index(path)
    if index.ntotal != len(meta["videos"]):
        raise SearchError(f"{path}: holds {index.ntotal} vectors, {meta_path} lists {len(meta['videos'])}")
    return index, meta
