"""Creating and opening a vtr feature store (a Zarr v3 group that xarray opens as is)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from storage.schema import (
    DONE,
    FORMAT_NAME,
    PHRASE_VARIABLES,
    PROTOCOLS,
    REQUIRED,
    SCHEMA_VERSION,
    TABLE_STATE,
    TABLES,
    VARIABLES,
    StoreLayout,
    VarSpec,
)


class StoreError(Exception):
    """A store that cannot be used; the message names the path and the cause."""


# lz4 at level 1 for the small integer arrays: reading speed is what matters
# (zstd halves read throughput for a few percent of disk).
COMPRESSOR = BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")
# A chunk a done item wrote is on disk even when it holds only fill values, so a chunk that
# is gone is lost, never read as zeros (storage.integrity; audio_tokens of silent videos
# are the one exception, see storage.writers).
zarr.config.set({"array.write_empty_chunks": True})


@contextlib.contextmanager
def disk_full_is_one_line(path: str, what: str) -> Iterator[None]:
    """A full disk (or quota) while writing: one ``StoreError`` line naming the store."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StoreError(f"{path}: no space left on the device while writing {what} ({e.strerror}); "
                         f"free some and re-run: what was finished is kept") from None


def _is_url(path: str) -> bool:
    return "://" in str(path)


def open_group(path: str | os.PathLike, mode: str = "r+",
               storage_options: dict | None = None, consolidated: bool | None = None) -> zarr.Group:
    """Open the store's root group; ``path`` may be a local folder or an fsspec URL.

    ``consolidated=False`` lists the arrays actually there, which a crash between creating
    an array and re-consolidating leaves out of the consolidated metadata.
    """
    path = str(path)
    if not _is_url(path) and mode in ("r", "r+") and not os.path.isdir(path):
        raise StoreError(f"{path}: no such store (not a directory)")
    try:
        return zarr.open_group(path, mode=mode, zarr_format=3, use_consolidated=consolidated,
                               storage_options=storage_options if _is_url(path) else None)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreError(f"{path}: not a Zarr v3 group ({e.__class__.__name__})") from None
    except json.JSONDecodeError as e:
        raise bad_metadata(path, e, storage_options) from None


def bad_metadata(path: str, error: json.JSONDecodeError, storage_options: dict | None = None) -> StoreError:
    """The one-line error for unreadable Zarr metadata, naming the first ``zarr.json`` that
    does not parse (a truncated write, a crash while consolidating)."""
    where = f"{str(path).rstrip('/')}/zarr.json"
    try:
        for name in _metadata_files(str(path), storage_options):
            try:
                json.loads(_read_bytes(name, storage_options))
            except ValueError:
                where = name
                break
    except OSError:
        pass
    return StoreError(f"{where}: corrupt Zarr metadata, not valid JSON ({error.msg} at line {error.lineno}, "
                      f"column {error.colno}); restore it or rebuild the store")


def _metadata_files(path: str, storage_options: dict | None) -> list[str]:
    """The root's ``zarr.json`` first, then those of its arrays."""
    root = path.rstrip("/")
    if _is_url(path):
        import fsspec
        fs, key = fsspec.core.url_to_fs(path, **(storage_options or {}))
        proto = path.split("://", 1)[0]
        found = [f"{proto}://{k}" for k in fs.glob(key.rstrip("/") + "/*/zarr.json")]
    else:
        found = sorted(os.path.join(root, d, "zarr.json") for d in os.listdir(root)
                       if os.path.isfile(os.path.join(root, d, "zarr.json")))
    return [f"{root}/zarr.json", *found]


def _read_bytes(name: str, storage_options: dict | None) -> bytes:
    if _is_url(name):
        import fsspec
        with fsspec.open(name, "rb", **(storage_options or {})) as f:
            return f.read()
    with open(name, "rb") as f:
        return f.read()


def consolidate(path: str | os.PathLike, storage_options: dict | None = None) -> None:
    """Rewrite consolidated metadata so ``xarray.open_zarr(path)`` opens without warnings.

    Any attribute or array creation drops it, so every metadata change ends here.
    """
    with warnings.catch_warnings(), disk_full_is_one_line(str(path), "its metadata"):
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(_store_like(str(path), storage_options), zarr_format=3)


def _store_like(path: str, storage_options: dict | None):
    if _is_url(path):
        return zarr.storage.FsspecStore.from_url(path, storage_options=storage_options or {})
    return path


def _np_dtype(spec: VarSpec):
    return str if spec.dtype == "str" else np.dtype(spec.dtype)


def create_array(group: zarr.Group, name: str, spec: VarSpec, layout: StoreLayout,
                 sizes: dict[str, int] | None = None) -> zarr.Array:
    sizes = {**layout.dim_sizes(), **(sizes or {})}
    shape = tuple(sizes[d] for d in spec.dims)
    chunks = tuple(max(1, min(layout.chunk_for(d, spec.chunks) if d in layout.dim_sizes()
                              else sizes[d], sizes[d])) for d in spec.dims)
    # float16 features do not compress (2-3 %), and raw chunks let storage.load_variable
    # read them at disk speed; the small int/flag arrays compress well
    # (str and bool keep zarr's default zstd); crc32c last, so the checksum covers the
    # bytes as stored (storage.integrity reads it)
    compressors = {"float16": (), "str": (ZstdCodec(level=0),), "bool": (ZstdCodec(level=0),)}.get(
        spec.dtype, (COMPRESSOR,))
    arr = group.create_array(name, shape=shape, chunks=chunks, dtype=_np_dtype(spec),
                             fill_value=spec.fill, dimension_names=spec.dims,
                             compressors=(*compressors, Crc32cCodec()))
    if spec.doc:
        arr.attrs["description"] = spec.doc
    return arr


def create_store(
    path: str | os.PathLike,
    *,
    dataset: str,
    video_ids: Sequence[str],
    splits: Sequence[str],
    caption_text: Sequence[str],
    caption_video: Sequence[int],
    video_paths: Sequence[str] | None = None,
    urls: Sequence[str] | None = None,
    start_times: Sequence[float] | None = None,
    end_times: Sequence[float] | None = None,
    layout: StoreLayout | None = None,
    data_root: str = "",
    protocol: str = "single",
    max_seconds: float | None = None,
    storage_options: dict | None = None,
) -> StoreLayout:
    """Write an empty store (all features missing) from a dataset's manifest.

    ``protocol`` (one of ``PROTOCOLS``) is how the test split is scored; ``max_seconds``
    limits the frames step to the first seconds of each video (None: all of it).

    Refuses to touch an existing path: nothing already written is ever overwritten.
    """
    path = str(path)
    n_v, n_c = len(video_ids), len(caption_text)
    if n_v == 0:
        raise StoreError(f"{path}: cannot create a store with no videos")
    if len(splits) != n_v or len(caption_video) != n_c:
        raise StoreError(f"{path}: manifest lengths disagree (videos {n_v}, splits {len(splits)}, "
                         f"captions {n_c}, caption_video {len(caption_video)})")
    cv = np.asarray(caption_video, dtype=np.int64)
    if n_c and (cv.min() < 0 or cv.max() >= n_v):
        raise StoreError(f"{path}: caption_video holds indices outside 0..{n_v - 1}")
    if protocol not in PROTOCOLS:
        raise StoreError(f"{path}: unknown protocol {protocol!r} (expected {' | '.join(PROTOCOLS)})")
    bad = sorted(set(splits) - {"train", "val", "test"})
    if bad:
        raise StoreError(f"{path}: unknown split names {bad} (expected train | val | test)")
    if len(set(video_ids)) != n_v:
        raise StoreError(f"{path}: video ids are not unique")
    if not _is_url(path) and os.path.exists(path):
        raise StoreError(f"{path}: already exists; open it to resume, or remove it first")
    layout = layout or StoreLayout(n_videos=n_v, n_captions=n_c)
    if (layout.n_videos, layout.n_captions) != (n_v, n_c):
        raise StoreError(f"{path}: layout sizes {layout.n_videos}/{layout.n_captions} "
                         f"do not match the manifest {n_v}/{n_c}")
    if not _is_url(path):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise StoreError(f"{path}: cannot write into {parent} (read-only or missing)")
    # A local store is built under a temporary name and renamed when complete, so a crash
    # during creation never leaves a half-made store at `path`.
    final, path = path, path if _is_url(path) else f"{path}.creating-{uuid.uuid4().hex[:8]}"
    try:
        group = zarr.open_group(path, mode="w-", zarr_format=3,
                                storage_options=storage_options if _is_url(path) else None)
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError):
        raise StoreError(f"{path}: already exists; open it to resume, or remove it first") from None
    except OSError as e:
        raise StoreError(f"{path}: cannot create the store ({e.strerror or e})") from None
    for name, spec in VARIABLES.items():
        create_array(group, name, spec, layout)
    manifest = {
        "video": np.asarray(video_ids, dtype=str),
        "split": np.asarray(splits, dtype=str),
        "caption_text": np.asarray(caption_text, dtype=str),
        "caption_video": cv.astype(np.int32),
    }
    if video_paths is not None:
        manifest["video_path"] = np.asarray(video_paths, dtype=str)
    if urls is not None:
        manifest["url"] = np.asarray(urls, dtype=str)
    if start_times is not None:
        manifest["start_time"] = np.asarray(start_times, dtype=np.float32)
    if end_times is not None:
        manifest["end_time"] = np.asarray(end_times, dtype=np.float32)
    for name, values in manifest.items():
        if len(values):
            group[name][:] = values
    group.attrs.update({
        "vtr_schema_version": SCHEMA_VERSION,
        "vtr_format": FORMAT_NAME,
        "dataset": dataset,
        "layout": layout.to_json(),
        "data_root": str(data_root),
        "protocol": protocol,
        "max_seconds": max_seconds,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "provenance": {},
    })
    consolidate(path, storage_options)
    if path != final:
        try:
            os.rename(path, final)
        except OSError as e:
            shutil.rmtree(path, ignore_errors=True)
            raise StoreError(f"{final}: already exists or cannot be created ({e.strerror})") from None
    return layout


def read_attrs(path: str | os.PathLike, storage_options: dict | None = None) -> dict:
    """The store's attributes after the format and version checks."""
    group = open_group(path, mode="r", storage_options=storage_options)
    attrs = dict(group.attrs)
    _check_attrs(str(path), attrs)
    return attrs


def _check_attrs(path: str, attrs: dict) -> None:
    if attrs.get("vtr_format") != FORMAT_NAME:
        raise StoreError(f"{path}: not a vtr store (attribute vtr_format is "
                         f"{attrs.get('vtr_format')!r}, expected {FORMAT_NAME!r})")
    version = attrs.get("vtr_schema_version")
    if isinstance(version, int) and version < SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {version}, this vtr reads version {SCHEMA_VERSION}; "
                         f"upgrade it in place with `vtr store upgrade {path}`")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {version}, this vtr reads version {SCHEMA_VERSION}")


def layout_of(path: str | os.PathLike, storage_options: dict | None = None) -> StoreLayout:
    return StoreLayout.from_json(read_attrs(path, storage_options)["layout"])


def open_store(path: str | os.PathLike, *, dataset: str | None = None,
               storage_options: dict | None = None) -> xr.Dataset:
    """Open a store as a lazy, labelled ``xarray.Dataset`` after schema checks.

    ``dataset`` (optional) must match the name the store was created for.
    """
    path = str(path)
    attrs = read_attrs(path, storage_options)
    if dataset is not None and attrs.get("dataset") != dataset:
        raise StoreError(f"{path}: a store of dataset {attrs.get('dataset')!r}, not {dataset!r}")
    try:
        ds = xr.open_zarr(path, zarr_format=3, consolidated=None,
                          storage_options=storage_options if _is_url(path) else None)
    except json.JSONDecodeError as e:
        raise bad_metadata(path, e, storage_options) from None
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise StoreError(f"{path}: xarray cannot open it ({e})") from None
    missing = [v for v in REQUIRED if v not in ds.variables]
    if missing:
        raise StoreError(f"{path}: missing variable(s) {', '.join(missing)}")
    layout = StoreLayout.from_json(attrs["layout"])
    for name in REQUIRED:
        want = VARIABLES[name].dims
        if tuple(ds[name].dims) != want:
            raise StoreError(f"{path}: variable {name} has dims {tuple(ds[name].dims)}, expected {want}")
    sizes = layout.dim_sizes()
    for d, n in ds.sizes.items():
        if d in sizes and n != sizes[d]:
            raise StoreError(f"{path}: dimension {d} has {n} entries, the layout says {sizes[d]}")
    return ds


def set_provenance(path: str | os.PathLike, group_name: str, record: dict,
                   storage_options: dict | None = None) -> None:
    """Record how one feature group was made (model, weights, preprocessing, versions)."""
    group = open_group(path, mode="r+", storage_options=storage_options)
    prov = dict(group.attrs.get("provenance", {}))
    record = _jsonable(record)
    if _same_record(prov.get(group_name), record):
        # workers of one step all call this: skipping identical records keeps them from
        # rewriting (and racing on) the root metadata
        return
    prov[group_name] = record
    with disk_full_is_one_line(str(path), "its provenance"):
        group.attrs["provenance"] = prov
    consolidate(path, storage_options)


def set_step_warning(path: str | os.PathLike, step: str, message: str | None,
                     storage_options: dict | None = None) -> None:
    """Record (or, with ``None``, clear) why a whole-store step could not run on this data;
    ``vtr store info`` shows it. Kept in the ``step_warnings`` attribute, one line per step."""
    group = open_group(path, mode="r+", storage_options=storage_options)
    warned = dict(group.attrs.get("step_warnings", {}))
    if warned.get(step) == message or (message is None and step not in warned):
        return
    if message is None:
        del warned[step]
    else:
        warned[step] = message
    group.attrs["step_warnings"] = warned
    consolidate(path, storage_options)


def set_annotation_record(path: str | os.PathLike, n_val: int | None, warnings: Sequence[str],
                          storage_options: dict | None = None) -> None:
    """Record how the annotations were read: ``n_val`` (the validation size asked of the
    reader; None: the release's own val list) and the reader's warnings (per-item problems
    let through), which ``vtr store info`` counts. Each extraction run rewrites both."""
    group = open_group(path, mode="r+", storage_options=storage_options)
    record = {"n_val": n_val, "annotation_warnings": list(warnings)}
    if all(group.attrs.get(k, object()) == v for k, v in record.items()):
        return
    group.attrs.update(record)
    consolidate(path, storage_options)


def _same_record(old: dict | None, new: dict) -> bool:
    volatile = ("created",)
    return old is not None and {k: v for k, v in old.items() if k not in volatile} == \
        {k: v for k, v in new.items() if k not in volatile}


def write_table(path: str | os.PathLike, dim: str, columns: dict[str, np.ndarray], *, conflict: str,
                storage_options: dict | None = None) -> np.ndarray:
    """Create (or resume) the table along the planned dimension ``dim`` (``TABLES``: the
    phrase table, the style rows) and write ``columns`` into its rows not done yet.

    Returns the indices of those rows. When ``columns`` hold every data variable of the
    table, the rows are marked done (the state goes in last, so a crash leaves them to
    redo); otherwise they stay missing for the step's writer. Done rows are never
    overwritten: a table whose done rows differ in a planned column (or whose length
    differs) is refused with the one-line ``conflict``.
    """
    spec = TABLES[dim]
    state_name = TABLE_STATE[dim]
    values = {k: np.asarray(v) for k, v in columns.items()}
    n = len(next(iter(values.values())))
    group = open_group(path, mode="r+", storage_options=storage_options, consolidated=False)
    if state_name in group:
        state = np.asarray(group[state_name][:])
        done = state == DONE
        same = state.size == n and all(
            np.array_equal(as_str(group[k][:])[done] if spec[k].dtype == "str" else np.asarray(group[k][:])[done],
                           values[k][done]) for k in values if spec[k].key)
        if not same:
            raise StoreError(f"{path}: {conflict} ({state.size} rows in the store, {n} new)")
        todo = np.flatnonzero(~done)
    else:
        layout = StoreLayout.from_json(group.attrs["layout"])
        for name, var in spec.items():
            create_array(group, name, var, layout, sizes={dim: n})
        consolidate(path, storage_options)
        group = open_group(path, mode="r+", storage_options=storage_options)
        todo = np.arange(n)
    if todo.size:
        for name, v in values.items():
            var = spec[name]
            group[name].oindex[todo] = v[todo] if var.dtype == "str" else v[todo].astype(var.dtype)
        data = [k for k, v in spec.items() if not v.key and k != state_name and not k.endswith("_error")]
        if all(k in values for k in data):
            group[state_name].oindex[todo] = np.full(todo.size, DONE, np.uint8)
    return todo


def create_phrase_table(path: str | os.PathLike, n_phrases: int,
                        storage_options: dict | None = None) -> None:
    """Create the empty phrase table arrays (for stores filled by hand: planted stores)."""
    group = open_group(path, mode="r+", storage_options=storage_options, consolidated=False)
    if "phrase_state" in group:
        if group["phrase_state"].shape[0] != n_phrases:
            raise StoreError(f"{path}: phrase table has {group['phrase_state'].shape[0]} phrases, "
                             f"the new one {n_phrases}; remove tags to re-mine")
        return
    layout = StoreLayout.from_json(group.attrs["layout"])
    for name, spec in PHRASE_VARIABLES.items():
        create_array(group, name, spec, layout, sizes={"phrase": n_phrases})
    consolidate(path, storage_options)


def write_style_table(path: str | os.PathLike, source: np.ndarray, style: np.ndarray, text: np.ndarray,
                      embedding: np.ndarray, tokens: np.ndarray, mask: np.ndarray,
                      storage_options: dict | None = None) -> int:
    """Create and fill complete style rows in one go (planted stores); returns how many
    rows were written. See ``write_table`` for what is refused."""
    columns = {"style_caption_source": np.asarray(source, np.int32), "style_caption_style": np.asarray(style, str),
               "style_caption_text": np.asarray(text, str), "style_caption_embedding": np.asarray(embedding),
               "style_caption_tokens": np.asarray(tokens), "style_caption_mask": np.asarray(mask, bool)}
    return int(write_table(path, "style_caption", columns, storage_options=storage_options,
                           conflict="the store already holds style captions other than these; "
                                    "remove the style_caption_* arrays to write new ones").size)


def as_str(values: Any) -> np.ndarray:
    """A fixed-width ``str`` array from a string variable.

    Zarr 3 and xarray hand out numpy's variable-width ``StringDType``, which refuses
    ``.astype(str)``; this is the one conversion every reader should use.
    """
    a = np.asarray(values)
    if a.dtype.kind in ("U", "S"):
        return a.astype(str)
    return np.array(a.tolist(), dtype=str).reshape(a.shape) if a.size else np.zeros(a.shape, dtype=str)


def _jsonable(x: Any) -> Any:
    """Plain JSON values only: one numpy scalar in attributes poisons later writes."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)
