"""Step writers: the only way features enter a store.

A writer owns whole blocks (chunk-aligned ranges of the step's item dimension, see
``storage.schema``): every array it touches is chunked so that a block never shares a
chunk with another block, so workers that split the work by block never write the same
chunk. Inside a block the order is data, then error text, then state, and each chunk is
replaced atomically by the store, so a writer killed at any point leaves no item marked
done whose data is incomplete.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import zarr

from storage.schema import ALL_VARIABLES, DONE, FAILED, MISSING, STEPS, StoreLayout, step_variables
from storage.store import StoreError, as_str, disk_full_is_one_line, open_group, read_attrs

WRITERS: dict[str, type["StepWriter"]] = {}

# A test hook (tests/storage/test_kill_midway.py): ``VTR_TEST_PAUSE_WRITE=STEP:INDEX`` makes
# the write holding item INDEX of STEP stop between its data and its state, say so on
# stderr and wait there to be killed. Read once; unset it costs one comparison per write.
PAUSE_WRITE_ENV = "VTR_TEST_PAUSE_WRITE"


def _pause_point() -> tuple[str, int] | None:
    value = os.environ.get(PAUSE_WRITE_ENV)
    if not value:
        return None
    step, _, index = value.partition(":")
    return step, int(index)


_PAUSE = _pause_point()


def _pause_here(step: str, idx: np.ndarray) -> None:
    assert _PAUSE is not None
    if _PAUSE[0] == step and _PAUSE[1] in idx:
        import time

        # to fd 2 itself: a Prefect flow's log_prints would turn a print into a log record
        os.write(2, f"{PAUSE_WRITE_ENV}: {step} {_PAUSE[1]} data written, state not\n".encode())
        while True:
            time.sleep(60)


def register_writer(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        WRITERS[name] = cls
        cls.writer_name = name
        return cls
    return deco


def get_writer(name: str) -> type["StepWriter"]:
    try:
        return WRITERS[name]
    except KeyError:
        raise StoreError(f"no store writer named {name!r} (known: {', '.join(sorted(WRITERS))})") from None


@register_writer("zarr")
class StepWriter:
    """Writes the items of one step (``frames``, ``audio``, ``text``, ...)."""

    writer_name: str

    def __init__(self, path: str | os.PathLike, step: str, storage_options: dict | None = None,
                 extra_variables: tuple[str, ...] = ()):
        if step not in STEPS:
            raise StoreError(f"{path}: unknown step {step!r} (steps: {', '.join(STEPS)})")
        self.path, self.step = str(path), step
        attrs = read_attrs(path, storage_options)
        self.layout = StoreLayout.from_json(attrs["layout"])
        self.group: zarr.Group = open_group(path, mode="r+", storage_options=storage_options)
        self.item_dim = STEPS[step]
        if f"{step}_state" not in self.group:  # a planned table not created yet
            raise StoreError(f"{path}: the {step} step has not planned its {self.item_dim} rows yet")
        self.variables = tuple(step_variables(step)) + tuple(extra_variables)
        self._state = self.group[f"{step}_state"]
        self._error = self.group[f"{step}_error"]
        # the state array's chunks are the step's blocks (a planned table's length and
        # chunks are not in the layout)
        self.n_items = int(self._state.shape[0])
        self.block_size = int(self._state.chunks[0])

    # --- what is there ------------------------------------------------------------
    def states(self) -> np.ndarray:
        return np.asarray(self._state[:])

    def pending(self, retry_failed: bool = True) -> np.ndarray:
        """Indices of items still to do (missing, and failed unless ``retry_failed`` is off)."""
        s = self.states()
        todo = (s == MISSING) | ((s == FAILED) if retry_failed else False)
        gone = removed_items(self.group, self.step)
        if gone is not None:  # ids the annotations no longer list (storage.fingerprint)
            todo &= ~gone
        return np.flatnonzero(todo)

    def block_of(self, index: int) -> int:
        return int(index) // self.block_size

    def blocks(self) -> list[range]:
        return [range(b, min(b + self.block_size, self.n_items))
                for b in range(0, self.n_items, self.block_size)]

    def pending_blocks(self, retry_failed: bool = True) -> Iterator[np.ndarray]:
        """Pending indices grouped by owned block: the unit of work for one task."""
        todo = self.pending(retry_failed)
        if len(todo) == 0:
            return
        ids = todo // self.block_size
        for b in np.unique(ids):
            yield todo[ids == b]

    # --- writing ------------------------------------------------------------------
    def write(self, indices: np.ndarray, data: Mapping[str, np.ndarray] | None = None,
              errors: Mapping[int, str] | None = None) -> None:
        """Write rows for ``indices`` (all in one block), then mark them done or failed.

        ``data[name]`` has one row per index; rows of items listed in ``errors`` (index ->
        one-line cause) are not written and those items are marked failed. A full disk is a
        one-line ``StoreError`` (the items stay as they were: the state goes in last).
        """
        with disk_full_is_one_line(self.path, f"{self.step} items"):
            self._write(indices, data, errors)

    def _write(self, indices: np.ndarray, data: Mapping[str, np.ndarray] | None = None,
               errors: Mapping[int, str] | None = None) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return
        if np.any(np.diff(idx) <= 0):
            raise ValueError("indices must be strictly increasing")
        if idx[0] < 0 or idx[-1] >= self.n_items:
            raise IndexError(f"{self.path}: {self.step} index out of range 0..{self.n_items - 1}")
        if self.block_of(idx[0]) != self.block_of(idx[-1]):
            raise ValueError(f"{self.path}: a write must stay inside one block of "
                             f"{self.block_size} {self.item_dim}s (it owns those chunks)")
        errors = dict(errors or {})
        data = dict(data or {})
        ok = np.array([int(i) not in errors for i in idx])
        unknown = set(data) - set(self.variables)
        if unknown:
            raise KeyError(f"{self.path}: step {self.step} does not write {sorted(unknown)}")
        if ok.any():
            missing = [v for v in self.variables if v not in data]
            if missing:
                raise KeyError(f"{self.path}: step {self.step} needs {missing} for done items")
        good = idx[ok]
        for name, values in data.items():
            values = np.asarray(values)
            if values.shape[0] != idx.size:
                raise ValueError(f"{name}: {values.shape[0]} rows for {idx.size} indices")
            if not ok.any():
                continue
            spec = ALL_VARIABLES[name]
            arr = self.group[name]
            if name == "audio_tokens":  # silent videos' zeros stay unwritten (storage.integrity)
                arr = arr.with_config({"write_empty_chunks": False})
            rows = values[ok]
            if spec.dtype != "str":
                rows = rows.astype(spec.dtype, copy=False)
            if arr.shape[1:] != rows.shape[1:]:
                raise ValueError(f"{name}: rows of shape {rows.shape[1:]}, store has {arr.shape[1:]}")
            _set_rows(arr, good, rows)
        if _PAUSE is not None:
            _pause_here(self.step, idx)
        # errors before states: a state of FAILED always has its reason
        err = np.array([errors.get(int(i), "") for i in idx], dtype=str)
        _set_rows(self._error, idx, err)
        _set_rows(self._state, idx, np.where(ok, DONE, FAILED).astype(np.uint8))

    def reset(self, indices: np.ndarray) -> None:
        """Mark items missing again (their data is stale: an upstream step changed), so the
        next run redoes them. Same one-block rule as ``write``."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return
        if self.block_of(idx.min()) != self.block_of(idx.max()):
            raise ValueError(f"{self.path}: a reset must stay inside one block")
        idx = np.unique(idx)
        with disk_full_is_one_line(self.path, f"{self.step} states"):
            _set_rows(self._state, idx, np.full(idx.size, MISSING, dtype=np.uint8))
            _set_rows(self._error, idx, np.full(idx.size, "", dtype=str))


REMOVED = "removed"  # the split of an id the annotations no longer list (storage.fingerprint)


def removed_items(group: zarr.Group, step: str) -> np.ndarray | None:
    """Which items of ``step`` belong to removed videos (None: no video is removed)."""
    dim = STEPS[step]
    if dim not in ("video", "caption"):
        return None
    gone = as_str(group["split"][:]) == REMOVED
    if not gone.any():
        return None
    return gone if dim == "video" else gone[np.asarray(group["caption_video"][:])]


def _set_rows(arr: zarr.Array, idx: np.ndarray, rows: np.ndarray) -> None:
    if idx[-1] - idx[0] + 1 == idx.size:  # contiguous: one slice write, far faster
        arr[int(idx[0]):int(idx[-1]) + 1] = rows
    else:
        arr.set_orthogonal_selection((idx,), rows)


def failures(path: str | os.PathLike, storage_options: dict | None = None) -> list[dict]:
    """Every failed item of every step: ``{"step", "item", "index", "error"}``."""
    group = open_group(path, mode="r", storage_options=storage_options)
    ids = {"video": np.asarray(group["video"][:])}
    out = []
    for step, dim in STEPS.items():
        if f"{step}_state" not in group:
            continue
        state = np.asarray(group[f"{step}_state"][:])
        bad = np.flatnonzero(state == FAILED)
        if bad.size == 0:
            continue
        err = group[f"{step}_error"]
        for i in bad:
            item = str(ids[dim][i]) if dim in ids else f"{dim.replace('_', ' ')} {int(i)}"
            out.append({"step": step, "item": item, "index": int(i), "error": str(err[int(i)])})
    return out
