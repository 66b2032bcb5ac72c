"""The flows' side of input fingerprints (storage.fingerprint): a changed manifest written
into the store, and each step's changed items marked missing before it runs and recorded
after. Called by the core (``flows.run``) around each step; the graph and each step's own
inputs are the registry's (``flows.registry``)."""
from __future__ import annotations

import contextlib
import os
from collections import Counter

from flows.config import ExtractConfig
from flows.registry import REGISTRY
from storage import STEPS, as_str, open_group
from storage.fingerprint import record, refresh, update_manifest

# how a changed input is told ("3 captions edited, 1 URL changed")
_SAID = {"caption": "caption(s) edited", "url": "URL(s) changed", "window": "time window(s) changed",
         "path": "video path(s) changed", "file": "source file(s) changed", "inputs": "item(s) changed"}
_MANIFEST_SAID = {"split": "split(s) moved", "caption_text": "caption(s) edited", "url": "URL(s) changed",
                  "video_path": "video path(s) changed", "start_time": "start time(s) changed",
                  "end_time": "end time(s) changed", "removed": "id(s) removed (marked removed)"}
FINGERPRINTED = tuple(s for s in STEPS if STEPS[s] in ("video", "caption"))


def apply_manifest(store: str, manifest, storage_options: dict | None) -> str | None:
    """Write the annotations' current values into an existing store; the one line saying
    what changed (None: nothing)."""
    kw = manifest.store_kwargs()
    columns = {"split": kw["splits"], "video_path": kw["video_paths"], "url": kw["urls"],
               "start_time": kw["start_times"], "end_time": kw["end_times"]}
    counts = update_manifest(store, kw["video_ids"], columns, kw["caption_text"], kw["caption_video"],
                             storage_options=storage_options)
    return ", ".join(f"{n} {_MANIFEST_SAID.get(k, k)}" for k, n in counts.items()) or None


def changed_items(store: str, step: str, cfg: ExtractConfig) -> tuple[int, str | None]:
    """Mark the step's items whose inputs changed missing, and remove what the media steps
    made of them (the crawl and compress reuse a valid file they find); (how many, why)."""
    if step not in FINGERPRINTED:
        return 0, None
    items, why = refresh(store, step, REGISTRY[step].inputs, REGISTRY[step].after, cfg.storage_options)
    made = {"crawl": ("audio", ".wav"), "compress": ("compressed", ".mp4")}.get(step)
    if items.size and made and cfg.media_dir and "://" not in cfg.media_dir:
        ids = as_str(open_group(store, mode="r", storage_options=cfg.storage_options)["video"][:])
        for v in ids[items]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(cfg.media_dir, made[0], f"{v}{made[1]}"))
    return int(items.size), _words(why, step)


def record_inputs(store: str, step: str, storage_options: dict | None) -> None:
    if step in FINGERPRINTED:
        record(store, step, REGISTRY[step].inputs, REGISTRY[step].after, storage_options)


def _words(why: Counter, step: str) -> str | None:
    if not why:
        return None
    return ", ".join(f"{n} {_SAID.get(k, f'redone after {k}')}" for k, n in why.most_common())
