"""The one step preamble: every step's store I/O runs through ``run_step_items``.

A step is a compute function (store columns in, ``ItemResult`` per item out: the
extractors' pure functions do the work) plus a few declarative arguments. The helper
opens the step's writer, checks the store's geometry and the provenance, picks the
missing items, hands the compute function their inputs and writes the results back block
by block (data for done items, one-line errors for failed ones). Provenance is recorded
before the first feature is written, and a store whose step was started with another model
or other weights is refused instead of being mixed.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from extractors.engine import ItemResult
from flows.remote import Scratch, is_url, plan_groups
from storage import DONE, StepWriter, StoreError, StoreLayout, as_str, open_group, read_attrs, set_provenance

FLUSH_EVERY = 64  # items per write inside a block: a crash loses this much work, and the queued writes


def resolve(root: str, p: str) -> str:
    """A store path column's entry, relative to the data root unless absolute or a URL."""
    return p if os.path.isabs(p) or "://" in p else os.path.join(root, p)


class StepInputs:
    """The store as a step's compute function sees it: columns cut to the items to do.

    Media paths come out local: a file at a URL (a data root in object storage) is read
    from its scratch copy (``local``: URL -> copy, filled by ``run_step_items``)."""

    def __init__(self, path: str, idx: np.ndarray, layout: StoreLayout, storage_options: dict | None):
        self.path, self.idx, self.layout = path, idx, layout
        self.group = open_group(path, mode="r", storage_options=storage_options)
        self.attrs = read_attrs(path, storage_options)
        self.local: dict[str, str] = {}

    def subset(self, positions: list[int], local: dict[str, str]) -> StepInputs:
        """These inputs cut to ``positions``, reading URLs from the copies in ``local``."""
        sub = copy.copy(self)
        sub.idx, sub.local = self.idx[np.asarray(positions, dtype=np.int64)], local
        return sub

    def __len__(self) -> int:
        return int(self.idx.size)

    def column(self, name: str) -> np.ndarray:
        """Variable ``name`` at the items to do (strings as ``str``)."""
        arr = self.group[name]
        values = np.asarray(arr.oindex[self.idx]) if self.idx.size else np.asarray(arr[:0])
        return as_str(values) if values.dtype.kind in ("U", "S", "O", "T") else values

    def resolve(self, p: str) -> str:
        """A path column's entry resolved against the store's data root (maybe a URL)."""
        return resolve(str(self.attrs.get("data_root", "")), p)

    def file(self, p: str | None) -> str | None:
        """The local file to read for the resolved path ``p``."""
        return None if p is None else self.local.get(p, p)

    def paths(self, name: str) -> list[str]:
        """A path column at the items to do, as local files to read."""
        return [self.file(self.resolve(p)) for p in self.column(name)]


def check_same_clip(path: str, attrs: dict, record: dict, group: str, who: str) -> None:
    """Features compared with the store's ``group`` features must come from the same CLIP
    (model and weights sha256); a store without a ``group`` record has nothing to match.
    ``who`` names what is refused in the error ("tags need", "style needs")."""
    theirs = attrs.get("provenance", {}).get(group)
    if not theirs:
        return
    if (theirs.get("model"), theirs.get("weights_sha256")) != (record["model"], record["weights_sha256"]):
        raise StoreError(f"{path}: {group} features come from {theirs.get('model')} "
                         f"(sha256 {str(theirs.get('weights_sha256'))[:16]}), the text encoder is "
                         f"{record['model']} (sha256 {str(record['weights_sha256'])[:16]}): {who} the same CLIP")


def _check_provenance(path: str, step: str, record: dict, writer: StepWriter,
                      storage_options: dict | None) -> None:
    old = read_attrs(path, storage_options).get("provenance", {}).get(step)
    if old is None or not np.any(writer.states() == DONE):
        return
    if (old.get("model"), old.get("weights_sha256")) != (record["model"], record["weights_sha256"]):
        raise StoreError(f"{path}: step {step} was started with {old.get('model')} (sha256 "
                         f"{str(old.get('weights_sha256'))[:16]}), not {record['model']} (sha256 "
                         f"{str(record['weights_sha256'])[:16]}): mixing them is refused")


def _indices(writer: StepWriter, indices: Iterable[int] | None, retry_failed: bool) -> np.ndarray:
    pending = writer.pending(retry_failed)
    if indices is None:
        return pending
    idx = np.unique(np.asarray(list(indices), dtype=np.int64))
    if idx.size and (idx[0] < 0 or idx[-1] >= writer.n_items):
        raise IndexError(f"{writer.path}: {writer.step} index out of range 0..{writer.n_items - 1}")
    return idx[np.isin(idx, pending)]  # never redo a finished item


def run_step_items(store: str, step: str, compute: Callable[[StepInputs], Iterable[ItemResult]], *,
                   indices: Iterable[int] | None = None, retry_failed: bool = True,
                   check: Callable[[StoreLayout], str | None] | None = None, provenance: dict | None = None,
                   storage_options: dict | None = None, progress: bool = False,
                   on_error: Callable[[int, str], None] | None = None,
                   sources: Callable[[StepInputs], list[str | None]] | None = None,
                   scratch: Scratch | None = None, extra_variables: tuple[str, ...] = ()) -> dict:
    """Run one step on its pending items of ``store`` (or of ``indices``: one block).

    ``compute(inputs)`` yields one ``ItemResult`` per item, indexed by position in
    ``inputs.idx``, in increasing order. ``check(layout)`` returns why the store cannot
    take this step's features (or None); ``provenance`` is the step's record. Returns
    ``{"done", "failed"}`` counts; ``on_error(index, error)`` sees each failed item.

    ``sources(inputs)``: the resolved media file each item reads (None: none). Those at a
    URL are copied into ``scratch`` a group at a time, each group within its size limit,
    and removed once the group is computed. ``extra_variables``: optional variables
    (``storage.optional``) the results also hold.
    """
    store = str(store)
    writer = StepWriter(store, step, storage_options=storage_options, extra_variables=extra_variables)
    if check is not None and (why := check(writer.layout)):
        raise StoreError(f"{store}: {why}")
    if provenance is not None:
        _check_provenance(store, step, provenance, writer, storage_options)
    idx = _indices(writer, indices, retry_failed)
    if idx.size == 0:
        return {"done": 0, "failed": 0}
    inputs = StepInputs(store, idx, writer.layout, storage_options)
    if provenance is not None:
        set_provenance(store, step, provenance, storage_options=storage_options)
    local = _in_scratch(inputs, compute, sources(inputs), scratch) if sources and scratch else compute(inputs)
    results = (ItemResult(int(idx[r.index]), r.data, r.error) for r in local)
    try:
        return write_results(writer, results, progress, int(idx.size), on_error)
    finally:
        if hasattr(local, "close"):
            local.close()  # a failed write still removes the scratch copies now


def _in_scratch(inputs: StepInputs, compute: Callable[[StepInputs], Iterable[ItemResult]],
                sources: list[str | None], scratch: Scratch) -> Iterator[ItemResult]:
    """``compute``'s results, run a group at a time on local copies of the URL sources."""
    remote = {s for s in sources if s and is_url(s)}
    if not remote:
        yield from compute(inputs)
        return
    gb = scratch.limit_bytes / 1e9
    groups, errors = plan_groups(sources, scratch.sizes(sorted(remote)), scratch.limit_bytes,
                                 lambda u, n: f"{u}: {n / 1e9:.3g} GB, more than the scratch space "
                                              f"of a block ({gb:g} GB, --scratch-gb)")

    def run() -> Iterator[ItemResult]:
        for group in groups:
            wanted = sorted({sources[j] for j in group} & remote)
            with scratch.copies(wanted) as local:
                for r in compute(inputs.subset(group, local)):
                    error = r.error
                    for url, path in local.items():  # messages name the file the user has
                        error = error and error.replace(path, url)
                    yield ItemResult(group[r.index], r.data, error)

    yield from merge_errors(run(), errors)


def _write_batch(writer: StepWriter, batch: list[ItemResult]) -> None:
    """One write of consecutive results of one block: rows of the done items, causes of the
    failed ones (their states last, so a write cut short marks nothing done)."""
    idx = np.array([r.index for r in batch], dtype=np.int64)
    errors = {r.index: r.error for r in batch if not r.ok}
    good = [r for r in batch if r.ok]
    data = {}
    if good:
        for name in good[0].data:
            proto = np.asarray(good[0].data[name])
            # strings: the widest item's width, or a longer path than the first is cut
            dtype = np.result_type(*(np.asarray(r.data[name]).dtype for r in good)) \
                if proto.dtype.kind == "U" else proto.dtype
            rows = np.zeros((len(batch), *proto.shape), dtype=dtype)
            for j, r in enumerate(batch):
                if r.ok:
                    rows[j] = r.data[name]
            data[name] = rows
    writer.write(idx, data=data, errors=errors)


def _write_failed(writer: StepWriter, args: tuple, e: BaseException) -> StoreError:
    from extractors.errors import one_line

    batch = args[1]
    return StoreError(f"{writer.path}: writing {writer.step} items {batch[0].index}..{batch[-1].index} "
                      f"failed, the run stops: {type(e).__name__}: {one_line(e)}")


def write_results(writer: StepWriter, results: Iterator[ItemResult], progress: bool = False,
                  total: int | None = None, on_error: Callable[[int, str], None] | None = None) -> dict:
    """Stream ``results`` (increasing store indices) into ``writer``, one block at a time.

    The writes run on a background thread (``flows.background``) while the next results
    are computed. A write that fails raises ``StoreError`` (one line: the store, the items,
    the cause) and stops the run: no later item is written, so none is marked done."""
    from flows.background import BackgroundWriter

    if progress:
        from tqdm import tqdm
        results = tqdm(results, total=total, desc=writer.step, unit="item")
    done = failed = 0
    batch: list[ItemResult] = []
    with BackgroundWriter(lambda args, e: _write_failed(writer, args, e)) as background:
        for r in results:
            if batch and (writer.block_of(r.index) != writer.block_of(batch[-1].index) or len(batch) >= FLUSH_EVERY):
                background.submit(_write_batch, writer, batch)
                batch = []
            batch.append(r)
            done += r.ok
            failed += not r.ok
            if not r.ok and on_error is not None:
                on_error(r.index, r.error)
        if batch:
            background.submit(_write_batch, writer, batch)
    return {"done": done, "failed": failed}


def merge_errors(results: Iterable[ItemResult], errors: dict[int, str]) -> Iterator[ItemResult]:
    """Interleave precomputed failures with computed results, in index order."""
    pending = sorted(errors)
    k = 0
    for r in results:
        while k < len(pending) and pending[k] < r.index:
            yield ItemResult(pending[k], None, errors[pending[k]])
            k += 1
        yield r
    for i in pending[k:]:
        yield ItemResult(i, None, errors[i])
