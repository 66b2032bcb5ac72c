"""HDF5 export: the same variables, dimensions and attributes, for tools that want HDF5."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np

from storage.store import StoreError, open_group, read_attrs

H5_FORMAT_NAME = "vtr-hdf5"


def export_h5(path: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
              progress: bool = False, storage_options: dict | None = None) -> None:
    """Copy every array chunk-block by chunk-block (memory stays at one block).

    The file is written under a temporary name and renamed when complete, so an
    interrupted export never leaves a file that looks finished.
    """
    out = str(out)
    if os.path.exists(out) and not overwrite:
        raise StoreError(f"{out}: already exists (pass --overwrite to replace it)")
    attrs = read_attrs(path, storage_options)
    g = open_group(path, mode="r", storage_options=storage_options)
    names = sorted(n for n, _ in g.arrays())
    tmp = out + ".partial"
    try:
        with h5py.File(tmp, "w") as f:
            for k, v in attrs.items():
                f.attrs[k] = json.dumps(v)
            f.attrs["vtr_format"] = json.dumps(H5_FORMAT_NAME)
            it = names
            if progress:
                from tqdm import tqdm
                it = tqdm(names, desc="export", unit="array")
            for name in it:
                _copy_array(g[name], f, name)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _copy_array(arr, f: h5py.File, name: str) -> None:
    is_str = arr.dtype.kind in ("T", "U", "O")
    dtype = h5py.string_dtype() if is_str else arr.dtype
    chunks = tuple(min(c, s) for c, s in zip(arr.chunks, arr.shape)) if arr.size else None
    d = f.create_dataset(name, shape=arr.shape, dtype=dtype, chunks=chunks)
    d.attrs["dims"] = json.dumps(list(arr.metadata.dimension_names))
    for k, v in arr.attrs.items():
        d.attrs[k] = json.dumps(v)
    step = max(1, arr.chunks[0]) if arr.ndim else 1
    # a few chunks at a time along the first axis
    step *= max(1, (64 << 20) // max(1, step * int(np.prod(arr.shape[1:])) * max(1, arr.dtype.itemsize if not is_str else 64)))
    for s in range(0, arr.shape[0], step):
        block = np.asarray(arr[s:s + step])
        d[s:s + block.shape[0]] = block.astype(object) if is_str else block
