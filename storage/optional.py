"""Optional variables (``VarSpec.optional``): created by the step that writes them, when an
extraction option asks for them (issue 26: CLIP hidden states, template captions).

A store either holds such a variable for every item of its step or for none: the array
is created before the step's first item is done, and a run that would leave done items
without it (or give it another shape) is refused in one line.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil

import numpy as np

from storage.schema import ALL_VARIABLES, DONE, STEPS, StoreLayout
from storage.store import StoreError, consolidate, create_array, open_group, read_attrs


def _chunks(spec, layout: StoreLayout) -> dict[str, int]:
    """The spec's chunk overrides, each cut to divide the step's block (a writer owns whole
    chunks)."""
    out = {}
    for dim, n in spec.chunks.items():
        block = layout.chunk_for(dim)
        out[dim] = math.gcd(n, block) if block else n
    return out


def nbytes_per_item(name: str, sizes: dict[str, int]) -> int:
    """Bytes one item (video or caption) of optional variable ``name`` takes in the store."""
    spec = ALL_VARIABLES[name]
    return int(np.prod([sizes[d] for d in spec.dims[1:]])) * np.dtype(spec.dtype).itemsize


def create_optional(path: str, names: dict[str, dict[str, int]], attrs: dict[str, dict] | None = None,
                    storage_options: dict | None = None) -> None:
    """Create the optional variables ``names`` (name -> sizes of its dims beyond the
    layout's) where missing, with array attributes ``attrs[name]``. An existing one of
    another shape, or a new one while the step already has done items, is refused."""
    group = open_group(path, mode="r+", storage_options=storage_options, consolidated=False)
    layout = StoreLayout.from_json(read_attrs(path, storage_options)["layout"])
    created = False
    for name, extra in names.items():
        spec = ALL_VARIABLES[name]
        sizes = {**layout.dim_sizes(), **extra}
        shape = tuple(sizes[d] for d in spec.dims)
        if name in group:
            if tuple(group[name].shape) != shape:
                raise StoreError(f"{path}: {name} has shape {tuple(group[name].shape)}, this run writes "
                                 f"{shape}: extract into a new store")
            continue
        state = np.asarray(group[f"{spec.step}_state"][:])
        if np.any(state == DONE):
            raise StoreError(f"{path}: the {spec.step} step already has {int((state == DONE).sum())} done "
                             f"{STEPS[spec.step]}(s) without {name}: extract into a new store to add it")
        arr = create_array(group, name, dataclasses.replace(spec, chunks=_chunks(spec, layout)), layout,
                           sizes=extra)
        arr.attrs.update((attrs or {}).get(name, {}))
        created = True
    if created:
        consolidate(path, storage_options)


def present(path: str, step: str, storage_options: dict | None = None) -> list[str]:
    """The optional variables of ``step`` the store holds."""
    group = open_group(path, mode="r", storage_options=storage_options)
    return [n for n, s in ALL_VARIABLES.items() if s.optional and s.step == step and n in group]


def check_free_space(path: str, need: dict[str, int], log=print) -> None:
    """Print the extra bytes each variable needs; refuse in one line when the store's disk
    lacks their sum. A store at a URL cannot be asked: the sizes are printed only."""
    for name, n in need.items():
        log(f"{name}: {n / 1e6:,.1f} MB more on disk")
    total = sum(need.values())
    if "://" in str(path):
        log(f"{path}: object storage reports no free space; make sure it takes {total / 1e9:.3f} GB")
        return
    where = os.path.abspath(path)
    while not os.path.exists(where):
        where = os.path.dirname(where)
    free = shutil.disk_usage(where).free
    if free < total:
        raise StoreError(f"{path}: {', '.join(need)} need {total / 1e9:.3f} GB, the disk has "
                         f"{free / 1e9:.3f} GB free")
