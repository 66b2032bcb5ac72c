"""Inputs are part of the record: per item and per step, a fingerprint of what it was made from.

``<step>_inputs`` holds, for each finished item, ``name=hash;...``: one short hash per
input (the manifest row's fields the step reads, the source file's size and mtime, and each
upstream step's fingerprint and state). A re-run compares it with the inputs as they are
now: an item whose inputs differ is marked missing, so that step redoes it; the steps
depending on it see a changed upstream hash in turn. Which inputs and which upstream steps
belong to a step are the flows' facts (``flows.registry``: each step's ``inputs`` and ``after``),
passed in here.

An item finished before its fingerprint was recorded (a store of an older vtr, a crash
between the write and the record) has an empty one: it is taken as it is and recorded.

A changed manifest is written into the store in place (``update_manifest``): splits,
captions, URLs, windows and paths; ids no longer listed get the split ``removed`` and no
step touches them again.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from storage.schema import MISSING, VARIABLES
from storage.store import StoreError, as_str, consolidate, create_array, open_group
from storage.writers import REMOVED, StepWriter

FILE = "file"  # the input name of the source file's size and mtime


def _h(*parts: object) -> str:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=4).hexdigest()


def _file_stamp(root: str, rel: str) -> str:
    if "://" in root or "://" in rel:
        return ""  # object storage: the path and URL stand for the file
    p = rel if os.path.isabs(rel) else os.path.join(root, rel)
    try:
        st = os.stat(p)
    except OSError:
        return "absent"
    return f"{st.st_size}:{st.st_mtime_ns}"


def inputs_array(path: str, step: str, storage_options: dict | None = None):
    """The step's ``<step>_inputs`` array (created empty in a store that predates it)."""
    name = f"{step}_inputs"
    g = open_group(path, mode="r+", storage_options=storage_options, consolidated=False)
    if name not in g:
        from storage.schema import StoreLayout

        create_array(g, name, VARIABLES[name], StoreLayout.from_json(g.attrs["layout"]))
        consolidate(path, storage_options)
        g = open_group(path, mode="r+", storage_options=storage_options, consolidated=False)
    return g, g[name]


def current(path: str, step: str, own: Mapping[str, Sequence[str]], after: Sequence[str],
            storage_options: dict | None = None) -> np.ndarray:
    """Every item's fingerprint of ``step`` as the inputs are now."""
    g = open_group(path, mode="r", storage_options=storage_options, consolidated=False)
    n = g[f"{step}_state"].shape[0]
    parts: list[tuple[str, list[str]]] = []
    for name, columns in own.items():
        if name == FILE:
            root = str(g.attrs.get("data_root", ""))
            paths = as_str(g[columns[0]][:])
            parts.append((name, [_h(_file_stamp(root, p)) for p in paths]))
            continue
        cols = [as_str(g[c][:]) if VARIABLES[c].dtype == "str" else np.asarray(g[c][:]) for c in columns]
        parts.append((name, [_h(*(c[i] for c in cols)) for i in range(n)]))
    for up in after:
        if f"{up}_inputs" in g:
            fp = as_str(g[f"{up}_inputs"][:])
        else:
            fp = np.full(n, "", dtype=str)
        st = np.asarray(g[f"{up}_state"][:])
        parts.append((up, [_h(f, s) for f, s in zip(fp, st)]))
    if not parts:
        return np.full(n, "", dtype=str)
    return np.array([";".join(f"{name}={vals[i]}" for name, vals in parts) for i in range(n)], dtype=str)


def _differing(old: str, new: str) -> list[str]:
    a = dict(p.split("=", 1) for p in old.split(";") if "=" in p)
    b = dict(p.split("=", 1) for p in new.split(";") if "=" in p)
    return [k for k in b if a.get(k) != b[k]] or ["inputs"]


def refresh(path: str, step: str, own: Mapping[str, Sequence[str]], after: Sequence[str],
            storage_options: dict | None = None) -> tuple[np.ndarray, Counter]:
    """Mark missing the finished items of ``step`` whose inputs changed since they were
    made; returns them, and how many changed per input name (the first one that differs)."""
    g, arr = inputs_array(path, step, storage_options)
    stored = as_str(arr[:])
    now = current(path, step, own, after, storage_options)
    writer = StepWriter(path, step, storage_options=storage_options)
    state = writer.states()
    changed = np.flatnonzero((state != MISSING) & (stored != "") & (stored != now))
    why: Counter = Counter()
    for i in changed:
        why[_differing(stored[i], now[i])[0]] += 1
    for b in np.unique(changed // writer.block_size):
        writer.reset(changed[changed // writer.block_size == b])
    return changed, why


def record(path: str, step: str, own: Mapping[str, Sequence[str]], after: Sequence[str],
           storage_options: dict | None = None) -> None:
    """Write the fingerprints of the step's finished items (missing ones are left empty)."""
    g, arr = inputs_array(path, step, storage_options)
    now = current(path, step, own, after, storage_options)
    state = np.asarray(g[f"{step}_state"][:])
    new = np.where(state != MISSING, now, "")
    if not np.array_equal(as_str(arr[:]), new):
        arr[:] = new


def update_manifest(path: str, video_ids: Sequence[str], columns: Mapping[str, Sequence],
                    caption_text: Sequence[str], caption_video: Sequence[int],
                    storage_options: dict | None = None) -> dict[str, int]:
    """Write a changed manifest into the store in place; returns how many rows changed per
    variable (``removed``: ids no longer listed). ``columns``: per-video variables
    (split, video_path, url, start_time, end_time) in the order of ``video_ids``.

    Refused in one line: new ids, or a video whose number of captions changed (the store's
    sizes are fixed when it is created)."""
    g = open_group(path, mode="r+", storage_options=storage_options, consolidated=False)
    ids = as_str(g["video"][:])
    pos = {v: i for i, v in enumerate(ids)}
    new = [v for v in video_ids if v not in pos]
    if new:
        raise StoreError(f"{path}: the annotations list {len(new)} video(s) the store does not hold "
                         f"(first {new[0]!r}); a store's videos are fixed when it is created: use a new store path")
    rows = np.array([pos[v] for v in video_ids], dtype=np.int64)
    counts: dict[str, int] = {}
    for name, values in columns.items():
        if values is None:
            continue
        arr = g[name]
        # strings as objects: a fixed-width copy would cut longer new values
        old = as_str(arr[:]).astype(object) if VARIABLES[name].dtype == "str" else np.asarray(arr[:])
        want = old.copy()
        want[rows] = np.asarray(values, dtype=old.dtype)
        diff = ~((old == want) | (_isnan(old) & _isnan(want)))
        if diff.any():
            arr[:] = want.astype(str) if want.dtype == object else want
            counts[name] = int(diff.sum())
    # captions: each listed video's captions, in order, onto the store's rows of that video
    cv = np.asarray(g["caption_video"][:])
    store_caps: dict[int, np.ndarray] = {}
    for k, v in enumerate(cv):
        store_caps.setdefault(int(v), []).append(k)
    text = as_str(g["caption_text"][:]).astype(object)
    want = text.copy()
    listed: dict[int, list[str]] = {}
    for t, v in zip(caption_text, caption_video):
        listed.setdefault(int(rows[int(v)]), []).append(t)
    for v, texts in listed.items():
        slots = store_caps.get(v, [])
        if len(slots) != len(texts):
            raise StoreError(f"{path}: video {ids[v]!r} has {len(texts)} caption(s) in the annotations, "
                             f"{len(slots)} in the store; a store's captions are fixed when it is created: "
                             f"use a new store path")
        want[slots] = texts
    if (diff := text != want).any():
        g["caption_text"][:] = want.astype(str)
        counts["caption_text"] = int(diff.sum())
    gone = np.setdiff1d(np.arange(ids.size), rows)
    split = as_str(g["split"][:]).astype(object)
    fresh = gone[split[gone] != REMOVED]
    if fresh.size:
        split[fresh] = REMOVED
        g["split"][:] = split.astype(str)
        counts[REMOVED] = int(fresh.size)
    return counts


def _isnan(a: np.ndarray) -> np.ndarray:
    return np.isnan(a) if a.dtype.kind == "f" else np.zeros(a.shape, bool)
