"""Chunk integrity: crc32c checksums on every chunk, and done items whose chunks are gone.

Every array carries Zarr v3's ``crc32c`` codec (the last bytes-to-bytes codec, so the
checksum covers the bytes as stored). Zarr's own failure is a ``ValueError`` naming neither
array nor chunk, and a chunk file that is gone simply reads as the fill value. The codec
pipeline below (installed for the whole process when ``storage`` is imported) turns both
into one ``StoreError`` line naming the store, the array and the chunk, on every read that
meets them: xarray, dask, zarr indexing.

A chunk of a step's data array is required when it holds an item whose state is done:
the step writers write such chunks even when they hold only fill values
(``write_empty_chunks``), so an absent one is lost, never "all zeros". ``audio_tokens``
rows of videos without audio (``has_audio`` False) are the one exception: they stay
unwritten to keep silent videos from costing 1.8 MiB of zeros each.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import google_crc32c
import numpy as np
import zarr
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.registry import register_pipeline

from storage.schema import ALL_VARIABLES, DONE, STEPS
from storage.store import StoreError


class ChunkError(StoreError):
    """A chunk that fails its checksum, or a done item's chunk that is gone."""


def _store_root(store) -> str:
    root = getattr(store, "root", None)
    return str(root if root is not None else getattr(store, "path", store))


def bad_checksum_line(root: str, key: str) -> str:
    name, _, chunk = key.partition("/")
    return (f"{root}: array {name}, chunk {chunk}: fails its crc32c checksum (corrupt on disk); "
            f"`vtr store check --repair {root}` marks its items missing")


def lost_chunk_line(root: str, key: str, n_done: int) -> str:
    name, _, chunk = key.partition("/")
    return (f"{root}: array {name}, chunk {chunk}: missing, but {n_done} item(s) in it are marked done; "
            f"`vtr store check --repair {root}` marks them missing")


def checksum_ok(data: bytes) -> bool:
    """Whether a stored chunk's trailing 4 bytes are the crc32c of the bytes before them."""
    return len(data) >= 4 and google_crc32c.value(data[:-4]) == int.from_bytes(data[-4:], "little")


def step_data_array(name: str) -> str | None:
    """The step whose done items a chunk of ``name`` must exist for (None: no such rule)."""
    spec = ALL_VARIABLES.get(name)
    if spec is None or spec.key or spec.step not in STEPS or spec.dims[0] != STEPS[spec.step]:
        return None
    if name in (f"{spec.step}_state", f"{spec.step}_error", f"{spec.step}_inputs"):
        return None
    return spec.step


def required_rows(name: str, state: np.ndarray, has_audio: np.ndarray | None) -> np.ndarray:
    """Which rows of ``name`` (given its step's states over them) need their chunk."""
    done = state == DONE
    if name == "audio_tokens" and has_audio is not None:
        done &= has_audio.astype(bool)
    return done


def required_in(group: zarr.Group, name: str) -> np.ndarray:
    """``required_rows`` of array ``name`` of an open group."""
    step = step_data_array(name)
    if step is None or f"{step}_state" not in group:
        return np.zeros(group[name].shape[0], bool)
    has = np.asarray(group["has_audio"][:]) if name == "audio_tokens" else None
    return required_rows(name, np.asarray(group[f"{step}_state"][:]), has)


class _Recorder:
    """A byte getter that remembers whether its chunk was absent."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.absent = False

    async def get(self, *args, **kwargs):
        value = await self.inner.get(*args, **kwargs)
        self.absent = value is None
        return value

    def __getattr__(self, name):
        return getattr(self.inner, name)


class CheckedPipeline(BatchedCodecPipeline):
    """Zarr's pipeline, with checksum failures and lost chunks as one-line ``ChunkError``."""

    async def read_batch(self, batch_info, out, drop_axes=()) -> None:
        batch = list(batch_info)
        getters = [_Recorder(b[0]) for b in batch]
        try:
            await super().read_batch([(g, *b[1:]) for g, b in zip(getters, batch)], out, drop_axes)
        except ValueError as e:
            if "checksum" not in str(e):
                raise
            for g in getters:
                data = await g.inner.get(batch[0][1].prototype)
                if data is not None and not checksum_ok(data.to_bytes()):
                    raise ChunkError(bad_checksum_line(_store_root(g.store), g.path)) from None
            raise
        for g in getters:
            if g.absent:
                await _refuse_lost(g.inner)


async def _read_rows(store, name: str, rows: slice) -> np.ndarray | None:
    from zarr.api.asynchronous import open_array

    try:
        arr = await open_array(store=store, path=name, zarr_format=3)
    except (FileNotFoundError, KeyError, zarr.errors.ArrayNotFoundError):
        return None
    return np.asarray((await arr.getitem(rows)))


async def _refuse_lost(store_path) -> None:
    key = store_path.path
    name, _, chunk = key.partition("/")
    step = step_data_array(name)
    if step is None or not chunk.startswith("c"):
        return
    from zarr.api.asynchronous import open_array

    arr = await open_array(store=store_path.store, path=name, zarr_format=3)
    if not has_checksum(arr):  # a version-2 array (before an upgrade): absent meant fill
        return
    k = int(chunk.split("/")[1] if "/" in chunk else chunk.split(".")[1])
    rows = slice(k * arr.chunks[0], min((k + 1) * arr.chunks[0], arr.shape[0]))
    state = await _read_rows(store_path.store, f"{step}_state", rows)
    if state is None:
        return
    has = await _read_rows(store_path.store, "has_audio", rows) if name == "audio_tokens" else None
    n = int(required_rows(name, state, has).sum())
    if n:
        raise ChunkError(lost_chunk_line(_store_root(store_path.store), key, n))


register_pipeline(CheckedPipeline)
zarr.config.set({"codec_pipeline.path": f"{CheckedPipeline.__module__}.{CheckedPipeline.__qualname__}"})


# --- whole-store scans (``vtr store check``) ----------------------------------------------
@dataclass(frozen=True)
class BadChunk:
    array: str
    chunk: tuple[int, ...]  # chunk grid coordinates
    why: str  # "checksum" | "missing"
    rows: range  # the rows of the array's first dimension it covers
    n_done: int = 0

    @property
    def key(self) -> str:
        return "c/" + "/".join(map(str, self.chunk))

    def line(self, root: str) -> str:
        if self.why == "checksum":
            return bad_checksum_line(root, f"{self.array}/{self.key}")
        return lost_chunk_line(root, f"{self.array}/{self.key}", self.n_done)


def chunk_files(path: str, name: str) -> Iterator[tuple[tuple[int, ...], str]]:
    top = os.path.join(path, name, "c")
    for dirpath, _, files in os.walk(top):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), top)
            try:
                yield tuple(int(p) for p in rel.split(os.sep)), os.path.join(dirpath, f)
            except ValueError:
                continue  # not a chunk (a temporary file of an interrupted write)


def has_checksum(arr: zarr.Array) -> bool:
    return any(c.to_dict()["name"] == "crc32c" for c in (arr.metadata.codecs or []))


def scan_chunks(path: str, group: zarr.Group, names: Iterable[str]) -> list[BadChunk]:
    """Chunks that fail their checksum, and required chunks that are gone (local stores;
    an fsspec store is read whole through the checked pipeline instead)."""
    bad: list[BadChunk] = []
    states: dict[str, np.ndarray] = {}
    has_audio = np.asarray(group["has_audio"][:]) if "has_audio" in group else None
    for name in names:
        arr = group[name]
        rows_per = arr.chunks[0] if arr.ndim else 1
        if "://" in path:
            for k in range(0, arr.shape[0] if arr.ndim else 1, rows_per):
                try:
                    arr[k:k + rows_per] if arr.ndim else arr[()]
                except ChunkError as e:
                    raise StoreError(str(e)) from None
            continue
        present = set()
        if has_checksum(arr):
            for coords, fn in chunk_files(path, name):
                present.add(coords)
                with open(fn, "rb") as f:
                    ok = checksum_ok(f.read())
                if not ok:
                    start = coords[0] * rows_per
                    bad.append(BadChunk(name, coords, "checksum", range(start, min(start + rows_per, arr.shape[0]))))
        else:
            present = {c for c, _ in chunk_files(path, name)}
        step = step_data_array(name)
        if step is None or f"{step}_state" not in group:
            continue
        state = states.setdefault(step, np.asarray(group[f"{step}_state"][:]))
        need = required_rows(name, state, has_audio)
        tail = (0,) * (arr.ndim - 1)  # per-item arrays are chunked along their first axis only
        for k, start in enumerate(range(0, arr.shape[0], rows_per)):
            rows = range(start, min(start + rows_per, arr.shape[0]))
            n = int(need[rows.start:rows.stop].sum())
            if n and (k, *tail) not in present:
                bad.append(BadChunk(name, (k, *tail), "missing", rows, n))
    return bad
