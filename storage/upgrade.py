"""Upgrading an older store in place: ``vtr store upgrade PATH``.

Each upgrade only adds arrays derived from what the store already holds and bumps
``vtr_schema_version`` last, so a crash at any point leaves a store that is still the old
version with nothing lost, and running the upgrade again finishes it.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import zarr

from storage.integrity import chunk_files, has_checksum, required_in
from storage.schema import (ALL_VARIABLES, DONE, FORMAT_NAME, MISSING, PHRASE_VARIABLES, SCHEMA_VERSION,
                            STYLE_VARIABLES, StoreLayout)
from storage.store import StoreError, as_str, consolidate, create_array, open_group


def _state_array(group: zarr.Group, name: str, spec, layout: StoreLayout, dim: str, n: int) -> zarr.Array:
    if name in group:  # a previous, interrupted upgrade made it: its values are rewritten
        return group[name]
    return create_array(group, name, spec, layout, sizes={dim: n})


def _v1_to_v2(group: zarr.Group, layout: StoreLayout) -> list[str]:
    """Completion markers of the style rows and the phrase table become per-row states."""
    done = []
    if "style_caption_source" in group:
        src = group["style_caption_source"]
        n = src.shape[0]
        state = _state_array(group, "style_state", STYLE_VARIABLES["style_state"], layout, "style_caption", n)
        _state_array(group, "style_error", STYLE_VARIABLES["style_error"], layout, "style_caption", n)
        # version 1 wrote the source index last: a row was complete exactly when it was set
        state[:] = np.where(np.asarray(src[:]) >= 0, DONE, MISSING).astype(np.uint8)
        done.append(f"style_state from style_caption_source ({n} rows)")
    if "phrase_text" in group:
        text = group["phrase_text"]
        n = text.shape[0]
        state = _state_array(group, "phrase_state", PHRASE_VARIABLES["phrase_state"], layout, "phrase", n)
        # version 1 wrote phrase_text last, whole: any text meant a complete table
        complete = bool(as_str(text[:]).astype(bool).any())
        state[:] = np.full(n, DONE if complete else MISSING, np.uint8)
        done.append(f"phrase_state from phrase_text ({n} phrases)")
    return done


_NEW, _OLD = "__v3new", "__v2old"


def _v2_to_v3(group: zarr.Group, layout: StoreLayout) -> list[str]:
    """Every array is rewritten with the crc32c codec (storage.integrity), chunk by chunk:
    chunks never written stay absent. Each array is built beside the old one and swapped
    in by two renames, so an interrupted upgrade leaves each array old or new, never half."""
    root = getattr(group.store, "root", None)
    if root is None:
        raise StoreError(f"{group.store}: upgrading to checksums rewrites every array; copy the store to "
                         f"a local folder, upgrade it there and copy it back")
    root = str(root)
    done = []
    for entry in sorted(os.listdir(root)):  # finish what an interrupted run left
        if entry.endswith(_OLD):
            name = entry[:-len(_OLD)]
            if os.path.isdir(os.path.join(root, name)):
                shutil.rmtree(os.path.join(root, entry))
            else:
                os.rename(os.path.join(root, entry), os.path.join(root, name))
        elif entry.endswith(_NEW):
            shutil.rmtree(os.path.join(root, entry))
    for name in sorted(group.array_keys()):
        old = group[name]
        if name not in ALL_VARIABLES or has_checksum(old):
            continue
        spec = ALL_VARIABLES[name]
        new = create_array(group, name + _NEW, spec, layout, sizes=dict(zip(spec.dims, old.shape)))
        if dict(old.attrs) != dict(new.attrs):
            new.attrs.update(dict(old.attrs))
        rows = old.chunks[0]
        present = set()
        for coords, _ in chunk_files(root, name):
            sl = slice(coords[0] * rows, min((coords[0] + 1) * rows, old.shape[0]))
            new[sl] = old[sl]
            present.add(coords[0])
        # version 2 left chunks holding only fill values unwritten; a done item's are now
        # always on disk, so those are written out (their fill values are the data)
        required = required_in(group, name)
        for k, start in enumerate(range(0, old.shape[0], rows)):
            if k not in present and required[start:start + rows].any():
                new[start:start + rows] = old[start:start + rows]
        os.rename(os.path.join(root, name), os.path.join(root, name + _OLD))
        os.rename(os.path.join(root, name + _NEW), os.path.join(root, name))
        shutil.rmtree(os.path.join(root, name + _OLD))
        done.append(name)
    return [f"crc32c checksums on {len(done)} array(s), rewritten"] if done else []


UPGRADES = {1: _v1_to_v2, 2: _v2_to_v3}


def upgrade_store(path: str | os.PathLike, storage_options: dict | None = None) -> list[str]:
    """Bring the store at ``path`` to ``SCHEMA_VERSION`` in place; returns one line per
    change (empty when it already was current)."""
    path = str(path)
    group = open_group(path, mode="r+", storage_options=storage_options, consolidated=False)
    attrs = dict(group.attrs)
    if attrs.get("vtr_format") != FORMAT_NAME:
        raise StoreError(f"{path}: not a vtr store (attribute vtr_format is {attrs.get('vtr_format')!r})")
    version = attrs.get("vtr_schema_version")
    if version == SCHEMA_VERSION:
        return []
    if not isinstance(version, int) or version > SCHEMA_VERSION or version not in UPGRADES:
        raise StoreError(f"{path}: schema version {version}: no upgrade to version {SCHEMA_VERSION} from it")
    layout = StoreLayout.from_json(attrs["layout"])
    changes = []
    while version < SCHEMA_VERSION:
        changes += [f"v{version} -> v{version + 1}: {c}" for c in UPGRADES[version](group, layout)]
        consolidate(path, storage_options)
        version += 1
        group.attrs.update({"vtr_schema_version": version, "layout": layout.to_json()})
    consolidate(path, storage_options)
    return changes
