"""Engine output into the feature store: one step's pending items, written block by block
through ``storage.StepWriter`` (data for done items, one-line errors for failed ones).

The flows layer hands each worker whole blocks (``StepWriter.pending_blocks``) and calls
these with ``indices=`` one block; called without indices they do every pending item.
Provenance is recorded before the first feature is written, and a store whose step was
started with another model or other weights is refused instead of being mixed.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np

from extractors.engine import ItemResult, encode_audio, encode_captions, encode_frames
from storage import DONE, MISSING, StepWriter, StoreError, as_str, open_group, read_attrs, set_provenance

FLUSH_EVERY = 64  # items per write inside a block: a crash loses at most this much work


def _resolve(root: str, p: str) -> str:
    return p if os.path.isabs(p) or "://" in p else os.path.join(root, p)


def _check_provenance(path: str, step: str, record: dict, writer: StepWriter,
                      storage_options: dict | None) -> None:
    old = read_attrs(path, storage_options).get("provenance", {}).get(step)
    if old is None or not np.any(writer.states() == DONE):
        return
    if (old.get("model"), old.get("weights_sha256")) != (record["model"], record["weights_sha256"]):
        raise StoreError(f"{path}: step {step} was started with {old.get('model')} (sha256 "
                         f"{str(old.get('weights_sha256'))[:16]}), not {record['model']} (sha256 "
                         f"{str(record['weights_sha256'])[:16]}): mixing them is refused")


def _indices(writer: StepWriter, indices: Iterable[int] | None, retry_failed: bool) -> np.ndarray:
    if indices is None:
        return writer.pending(retry_failed)
    idx = np.unique(np.asarray(list(indices), dtype=np.int64))
    if idx.size and (idx[0] < 0 or idx[-1] >= writer.n_items):
        raise IndexError(f"{writer.path}: {writer.step} index out of range 0..{writer.n_items - 1}")
    return idx


def write_results(writer: StepWriter, results: Iterator[ItemResult], progress: bool = False,
                  total: int | None = None) -> dict:
    """Stream ``results`` (increasing indices) into ``writer``, one block at a time."""
    if progress:
        from tqdm import tqdm
        results = tqdm(results, total=total, desc=writer.step, unit="item")
    done = failed = 0
    batch: list[ItemResult] = []

    def flush() -> None:
        if not batch:
            return
        idx = np.array([r.index for r in batch], dtype=np.int64)
        errors = {r.index: r.error for r in batch if not r.ok}
        good = [r for r in batch if r.ok]
        data = {}
        if good:
            for name in good[0].data:
                proto = np.asarray(good[0].data[name])
                rows = np.zeros((len(batch), *proto.shape), dtype=proto.dtype)
                for j, r in enumerate(batch):
                    if r.ok:
                        rows[j] = r.data[name]
                data[name] = rows
        writer.write(idx, data=data, errors=errors)
        batch.clear()

    for r in results:
        if batch and (writer.block_of(r.index) != writer.block_of(batch[-1].index) or len(batch) >= FLUSH_EVERY):
            flush()
        batch.append(r)
        done += r.ok
        failed += not r.ok
    flush()
    return {"done": done, "failed": failed}


def write_frames(store_path: str | os.PathLike, encoder, *, indices: Iterable[int] | None = None,
                 retry_failed: bool = True, batch_size: int = 64, workers: int | None = None,
                 backend: str = "decord", timeout_s: float | None = 60.0, storage_options: dict | None = None,
                 progress: bool = True) -> dict:
    """Frame features of pending videos, decoded from the compressed copy when the compress
    step made one, else from the source video."""
    path = str(store_path)
    writer = StepWriter(path, "frames", storage_options=storage_options)
    lay = writer.layout
    if lay.dim != encoder.dim:
        raise StoreError(f"{path}: the store holds {lay.dim}-d frame features, the encoder gives {encoder.dim}")
    record = encoder.provenance(n_frames=lay.n_frames, backend=backend)
    _check_provenance(path, "frames", record, writer, storage_options)
    idx = _indices(writer, indices, retry_failed)
    if idx.size == 0:
        return {"done": 0, "failed": 0}
    g = open_group(path, mode="r", storage_options=storage_options)
    root = str(read_attrs(path, storage_options).get("data_root", ""))
    src = as_str(g["video_path"][:])
    comp = as_str(g["compressed_path"][:])
    comp_ok = np.asarray(g["compress_state"][:]) == DONE
    paths = [_resolve(root, comp[i] if comp_ok[i] and comp[i] else src[i]) for i in idx]
    set_provenance(path, "frames", record, storage_options=storage_options)
    res = encode_frames(encoder, paths, batch_size=batch_size, workers=workers, n_frames=lay.n_frames,
                        backend=backend, timeout_s=timeout_s)
    return write_results(writer, (_reindex(r, idx) for r in res), progress, len(idx))


def write_audio(store_path: str | os.PathLike, encoder, *, indices: Iterable[int] | None = None,
                retry_failed: bool = True, batch_size: int = 8, workers: int | None = None,
                storage_options: dict | None = None, progress: bool = True) -> dict:
    """AST tokens of pending videos from the crawl step's ``audio_path``; videos whose
    ``audio_source`` is ``none`` get zeros and ``has_audio`` False (done, not failed)."""
    path = str(store_path)
    writer = StepWriter(path, "audio", storage_options=storage_options)
    lay = writer.layout
    if (lay.n_audio_tokens, lay.audio_dim) != (encoder.n_tokens, encoder.dim):
        raise StoreError(f"{path}: the store holds {lay.n_audio_tokens} x {lay.audio_dim} audio tokens, "
                         f"the AST gives {encoder.n_tokens} x {encoder.dim}")
    record = encoder.provenance()
    _check_provenance(path, "audio", record, writer, storage_options)
    idx = _indices(writer, indices, retry_failed)
    if idx.size == 0:
        return {"done": 0, "failed": 0}
    g = open_group(path, mode="r", storage_options=storage_options)
    root = str(read_attrs(path, storage_options).get("data_root", ""))
    # a failed crawl is a decision too (audio_source stays "none"); only a crawl that has
    # not run yet leaves the audio source unknown
    crawl_ok = np.asarray(g["crawl_state"][:]) != MISSING
    source = as_str(g["audio_source"][:])
    apath = as_str(g["audio_path"][:])
    not_ready = {int(i): "audio source unknown: the crawl step is not done for this video"
                 for i in idx if not crawl_ok[i]}
    run_idx = np.array([i for i in idx if int(i) not in not_ready], dtype=np.int64)
    paths = [None if source[i] == "none" or not apath[i] else _resolve(root, apath[i]) for i in run_idx]
    set_provenance(path, "audio", record, storage_options=storage_options)
    res = (_reindex(r, run_idx) for r in encode_audio(encoder, paths, batch_size=batch_size, workers=workers))
    merged = _merge_errors(res, not_ready)
    return write_results(writer, merged, progress, len(idx))


def write_text(store_path: str | os.PathLike, encoder, *, indices: Iterable[int] | None = None,
               retry_failed: bool = True, batch_size: int = 256, storage_options: dict | None = None,
               progress: bool = True) -> dict:
    """Caption token features, masks and EOT embeddings of pending captions."""
    path = str(store_path)
    writer = StepWriter(path, "text", storage_options=storage_options)
    lay = writer.layout
    if lay.dim != encoder.dim or lay.n_words != encoder.config.context_length:
        raise StoreError(f"{path}: the store holds {lay.n_words} x {lay.dim} caption tokens, the encoder "
                         f"gives {encoder.config.context_length} x {encoder.dim}")
    record = encoder.provenance()
    _check_provenance(path, "text", record, writer, storage_options)
    idx = _indices(writer, indices, retry_failed)
    if idx.size == 0:
        return {"done": 0, "failed": 0}
    g = open_group(path, mode="r", storage_options=storage_options)
    texts = as_str(g["caption_text"][:])[idx].tolist()
    set_provenance(path, "text", record, storage_options=storage_options)
    res = encode_captions(encoder, texts, batch_size=batch_size)
    return write_results(writer, (_reindex(r, idx) for r in res), progress, len(idx))


def _reindex(r: ItemResult, idx: np.ndarray) -> ItemResult:
    return ItemResult(int(idx[r.index]), r.data, r.error)


def _merge_errors(results: Iterator[ItemResult], errors: dict[int, str]) -> Iterator[ItemResult]:
    """Interleave precomputed failures with engine results, in index order."""
    pending = sorted(errors)
    k = 0
    for r in results:
        while k < len(pending) and pending[k] < r.index:
            yield ItemResult(pending[k], None, errors[pending[k]])
            k += 1
        yield r
    for i in pending[k:]:
        yield ItemResult(i, None, errors[i])
