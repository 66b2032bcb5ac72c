"""Readers registered by format name; the name a writer stored picks the reader."""
from __future__ import annotations

import json
import os
from collections.abc import Callable

import xarray as xr

from storage.export import H5_FORMAT_NAME
from storage.schema import FORMAT_NAME, SCHEMA_VERSION
from storage.store import StoreError, open_store

READERS: dict[str, Callable[..., xr.Dataset]] = {}


def register_reader(name: str):
    def deco(fn):
        READERS[name] = fn
        return fn
    return deco


@register_reader(FORMAT_NAME)
def _read_zarr(path: str, **kw) -> xr.Dataset:
    return open_store(path, **kw)


@register_reader(H5_FORMAT_NAME)
def _read_h5(path: str, **_) -> xr.Dataset:
    """A lazy Dataset over an exported HDF5 file (the file stays open while it is used)."""
    import dask.array as da
    import h5py

    f = h5py.File(path, "r")
    attrs = {k: json.loads(v) for k, v in f.attrs.items()}
    if attrs.get("vtr_schema_version") != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {attrs.get('vtr_schema_version')}, "
                         f"this vtr reads version {SCHEMA_VERSION}")
    variables = {}
    for name, d in f.items():
        dims = json.loads(d.attrs["dims"])
        if d.dtype.kind == "O":
            data = d.asstr()[()]
        else:
            data = da.from_array(d, chunks=d.chunks or d.shape)
        variables[name] = xr.Variable(dims, data)
    coords = {"video": variables.pop("video")}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def format_of(path: str | os.PathLike) -> str:
    path = str(path)
    if os.path.isfile(path):
        import h5py
        if not h5py.is_hdf5(path):
            raise StoreError(f"{path}: neither a vtr Zarr store nor an HDF5 export")
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs.get("vtr_format", '""'))
    return FORMAT_NAME


def open_any(path: str | os.PathLike, **kw) -> xr.Dataset:
    """Open a store or an export with the reader its format name selects."""
    name = format_of(path)
    try:
        reader = READERS[name]
    except KeyError:
        raise StoreError(f"{path}: unknown store format {name!r} (known: {', '.join(READERS)})") from None
    return reader(str(path), **kw)
