"""Consistency checks beyond the schema: chunks (checksums, done items' chunks present), masks
against data, indices, NaNs, errors; and the repair of lost or corrupt chunks."""
from __future__ import annotations

import os

import numpy as np

from storage.schema import DONE, FAILED, STEPS
from storage.integrity import scan_chunks, step_data_array
from storage.store import StoreError, open_group, open_store


def check_store(path: str | os.PathLike, storage_options: dict | None = None) -> list[str]:
    """Problems found (empty when the store is consistent). Reads block by block, so it
    runs on stores larger than memory."""
    path = str(path)
    open_store(path, storage_options=storage_options)  # schema checks raise StoreError
    g = open_group(path, mode="r", storage_options=storage_options)
    bad = scan_chunks(path, g, sorted(g.array_keys()))
    if bad:  # the checks below would stop at the first bad chunk they read
        return [b.line(path) for b in bad] + ["content checks skipped until the chunks above are repaired"]
    problems: list[str] = []
    n_v = g["video"].shape[0]
    cv = np.asarray(g["caption_video"][:])
    if cv.size and (cv.min() < 0 or cv.max() >= n_v):
        problems.append(f"caption_video: indices outside 0..{n_v - 1}")
    for step in STEPS:
        if f"{step}_state" not in g:  # a planned table not created yet
            continue
        state = np.asarray(g[f"{step}_state"][:])
        err = np.asarray(g[f"{step}_error"][:])
        silent = np.flatnonzero((state == FAILED) & (err == ""))
        if silent.size:
            problems.append(f"{step}: {silent.size} failed item(s) without an error text")
    problems += _check_blocks(g, "frames", "video", _check_frames)
    problems += _check_blocks(g, "audio", "video", _check_audio)
    problems += _check_blocks(g, "text", "caption", _check_text)
    if "phrase_text" in g:
        n_p = g["phrase_text"].shape[0]
        problems += _check_blocks(g, "tags", "video", lambda g, sl, done: _check_tags(g, sl, done, n_p))
    if "style_state" in g:
        problems += _check_blocks(g, "style", "style_caption", lambda g, sl, done: _check_style(g, sl, done, cv.size))
    return problems


def _check_style(g, sl, done, n_captions: int) -> list[str]:
    src = np.asarray(g["style_caption_source"][sl])[done]
    msgs = []
    if ((src < 0) | (src >= n_captions)).any():
        msgs.append(f"style_caption_source outside 0..{n_captions - 1}")
    if _nan_rows(np.asarray(g["style_caption_embedding"][sl])[done]).any():
        msgs.append("NaN in style_caption_embedding")
    return msgs


def _check_blocks(g, step: str, dim: str, fn) -> list[str]:
    state = np.asarray(g[f"{step}_state"][:])
    chunk = g[f"{step}_state"].chunks[0]
    out = []
    for start in range(0, state.size, chunk):
        sl = slice(start, min(start + chunk, state.size))
        done = state[sl] == DONE
        if done.any():
            out += [f"{step}: {m}" for m in fn(g, sl, done)]
    return out


def _nan_rows(x: np.ndarray) -> np.ndarray:
    return np.isnan(x.reshape(x.shape[0], -1).astype(np.float32)).any(axis=1)


def _check_frames(g, sl, done):
    f = np.asarray(g["frame_features"][sl])[done]
    m = np.asarray(g["frame_mask"][sl])[done]
    base = sl.start + np.flatnonzero(done)
    msgs = []
    if (nan := _nan_rows(f)).any():
        msgs.append(f"NaN in frame_features of done video(s) {base[nan][:5].tolist()}")
    if (empty := ~m.any(axis=1)).any():
        msgs.append(f"done video(s) {base[empty][:5].tolist()} have no valid frame")
    if (leak := (np.abs(f.astype(np.float32)) * ~m[..., None]).reshape(len(f), -1).max(axis=1, initial=0) > 0).any():
        msgs.append(f"padded frames hold non-zero features in video(s) {base[leak][:5].tolist()}")
    return msgs


def _check_audio(g, sl, done):
    has = np.asarray(g["has_audio"][sl])[done]
    base = sl.start + np.flatnonzero(done)
    msgs = []
    for j, i in enumerate(base):  # one video per chunk: read row by row
        a = np.asarray(g["audio_tokens"][int(i)])
        if np.isnan(a.astype(np.float32)).any():
            msgs.append(f"NaN in audio_tokens of done video {int(i)}")
        elif not has[j] and np.any(a):
            msgs.append(f"video {int(i)} has_audio=False but non-zero audio_tokens")
    return msgs


def _check_text(g, sl, done):
    e = np.asarray(g["caption_embedding"][sl])[done]
    m = np.asarray(g["caption_mask"][sl])[done]
    base = sl.start + np.flatnonzero(done)
    msgs = []
    if (nan := _nan_rows(e)).any():
        msgs.append(f"NaN in caption_embedding of done caption(s) {base[nan][:5].tolist()}")
    lengths = m.sum(axis=1)
    prefix = m == (np.arange(m.shape[1])[None, :] < lengths[:, None])
    if (bad := ~prefix.all(axis=1) | (lengths < 2)).any():
        msgs.append(f"caption_mask is not a prefix of >= 2 tokens (SOT, EOT) for {base[bad][:5].tolist()}")
    return msgs


def _check_tags(g, sl, done, n_phrases):
    t = np.asarray(g["tag_index"][sl])[done]
    if ((t < -1) | (t >= n_phrases)).any():
        return [f"tag_index outside 0..{n_phrases - 1}"]
    return []


def assert_consistent(path: str | os.PathLike, storage_options: dict | None = None) -> None:
    problems = check_store(path, storage_options)
    if problems:
        raise StoreError(f"{path}: " + "; ".join(problems))


def repair_store(path: str | os.PathLike) -> list[str]:
    """Mark the items of every lost or corrupt chunk missing, so the next extract redoes
    them; returns one line per repaired chunk. A corrupt chunk is removed first (a write
    into it would have to read it). Chunks no step can rewrite (the manifest, a planned
    table's columns) are refused in one line: the store must be recreated."""
    from storage.writers import StepWriter

    path = str(path)
    if "://" in path:
        raise StoreError(f"{path}: --repair works on local stores only")
    g = open_group(path, mode="r", storage_options=None, consolidated=False)
    bad = scan_chunks(path, g, sorted(g.array_keys()))
    lost = [b for b in bad if _owner(b.array) is None]
    if lost:
        raise StoreError(f"{path}: array {lost[0].array}, chunk {lost[0].key} is {lost[0].why} and no step "
                         f"rewrites it (written when the store or its table was created): recreate the store")
    done = []
    for b in bad:
        step = _owner(b.array)
        if b.why == "checksum":
            os.remove(os.path.join(path, b.array, *b.key.split("/")))
        if b.array in (f"{step}_state", f"{step}_error"):
            # a lost state chunk reads as missing, its error chunk as empty: both go together
            for name in (f"{step}_state", f"{step}_error"):
                fn = os.path.join(path, name, *b.key.split("/"))
                if os.path.exists(fn):
                    os.remove(fn)
            done.append(f"{b.array} {b.key} ({b.why}): {step} items {b.rows.start}..{b.rows.stop - 1} marked missing")
            continue
        w = StepWriter(path, step)
        state = w.states()[b.rows.start:b.rows.stop]
        items = b.rows.start + np.flatnonzero(state == DONE)
        w.reset(items)
        done.append(f"{b.array} {b.key} ({b.why}): {items.size} {step} item(s) marked missing")
    return done


def _owner(name: str) -> str | None:
    """The step that rewrites array ``name`` when its items are redone."""
    for step in STEPS:
        if name in (f"{step}_state", f"{step}_error", f"{step}_inputs"):
            return step
    return step_data_array(name)
