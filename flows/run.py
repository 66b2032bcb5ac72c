"""The extraction core: a dataset's manifest in, a complete feature store out, on any
``concurrent.futures.Executor``.

``run_extraction(manifest, store, config, executor)`` checks everything it can before the
first video (weights fully loaded, the store's metadata and writability, a bucket and its
credentials), takes the store lock, then runs the steps of ``config.steps`` in the
registry's order (``flows.registry``). A block step submits ``run_block(step, store,
block, config)`` once per pending owned block of the store, so parallel workers never
write one chunk and a re-run redoes nothing finished; a whole-store step is one call.

The executor: by default ``InlineExecutor`` (blocks one at a time in this thread: a block
already keeps the cores busy with its decode workers and the model), a
``ProcessPoolExecutor``, or a Dask ``distributed.Client`` for a cluster. No server, no
port: ``vtr extract`` and the demo call this directly; the Prefect flows
(``flows.extract``) wrap it, a task per block. This module imports no Prefect.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future

import numpy as np

from extractors.weights import WeightsError
from flows.config import ExtractConfig
from flows.errors import ExtractError
from flows.inputs import apply_manifest, changed_items, record_inputs
from flows.registry import REGISTRY, StepSpec, encoders_needed, plan
from flows.remote import check_url, is_url, read_annotations
from flows.steps import ast_config
from storage import (DONE, StepWriter, StoreError, StoreLayout, create_store, failures, read_attrs,
                     set_annotation_record)

LOG = logging.getLogger("vtr.extract")

# A block raising one of these refused the step (another model's features in the store,
# unusable weights): not a crash of some items, so the run exits non-zero.
REFUSALS = (StoreError, ExtractError, WeightsError)


class InlineExecutor(Executor):
    """Runs each call when it is submitted, in the calling thread: a Ctrl-C lands in the
    block itself, and nothing runs ahead of the progress bar."""

    _max_workers = 0  # nothing in flight beyond the call being made

    def submit(self, fn, /, *args, **kwargs) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - the caller reads it from the future
            fut.set_exception(e)
        return fut


def worker_address() -> str:
    """The Dask worker running this call (its address, as the scheduler names it), else
    ``local``: the run summary counts blocks per worker."""
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def run_block(step: str, store: str, idx: list[int] | None, cfg: ExtractConfig,
              on_error: Callable[[int, str], None] | None = None) -> dict:
    """One block of ``step`` (its item indices; None: the whole store), wherever the
    executor runs it. Failed items go to ``on_error`` (default: this module's log)."""
    if on_error is None:
        def on_error(i: int, e: str) -> None:
            LOG.warning("%s item %d: %s", step, i, e) if i >= 0 else LOG.error("%s: %s", step, e)
    return {**REGISTRY[step].run(store, cfg, idx, on_error=on_error), "worker": worker_address()}


# --- checks before any step -----------------------------------------------------------------
def _check_weights(path: str | None, what: str, flag: str, random_init: bool) -> None:
    if path is not None and random_init:
        raise ExtractError(f"{path}: {what} weights and --random-init given together: choose one")
    if path is None:
        if not random_init:
            raise ExtractError(f"no {what} weights: pass {flag} PATH, or --random-init for "
                               "meaningless features (tests and demos)")
        return
    if not os.path.exists(path):
        raise ExtractError(f"{path}: {what} weights not found")


def load_encoders(cfg: ExtractConfig) -> dict[str, object]:
    """Build every encoder the steps will use, so that bad weights (a text file, a truncated
    checkpoint, another architecture) fail the run in one line naming the file before any
    video is probed. Blocks run in this process reuse them (``flows.steps`` caches them)."""
    from flows.registry import ENCODERS

    names = encoders_needed(cfg.steps)
    wanted = {}
    if "clip" in names:
        _check_weights(cfg.clip_weights, "CLIP", "--clip-weights", cfg.random_init)
        wanted["clip"] = (cfg.clip_weights, f"CLIP {cfg.clip_model}")
    if "ast" in names:
        _check_weights(cfg.ast_weights, "AST", "--ast-weights", cfg.random_init)
        wanted["ast"] = (cfg.ast_weights, "AST")
    encoders = {}
    for name, (path, what) in wanted.items():
        try:
            encoders[name] = ENCODERS[name](cfg.encoders())
        except (WeightsError, ValueError) as e:
            raise ExtractError(str(e).splitlines()[0]) from None
        except Exception as e:  # noqa: BLE001 - any failure to load is the file's fault
            cause = (str(e).strip().splitlines() or [""])[0]
            raise ExtractError(f"{path}: cannot load as {what} weights: not a checkpoint torch reads "
                               f"({type(e).__name__}: {cause})") from None
    return encoders


def _check_writable(store: str, storage_options: dict | None) -> None:
    """Write and remove a probe file in the store (and in an array's folder), so a read-only
    store is refused in one line before any step runs rather than after the encoders ran."""
    probe = f".vtr-write-check-{uuid.uuid4().hex[:8]}"
    try:
        if is_url(store):
            import fsspec
            fs, key = fsspec.core.url_to_fs(store, **(storage_options or {}))
            fs.pipe(f"{key.rstrip('/')}/{probe}", b"")
            fs.rm(f"{key.rstrip('/')}/{probe}")
            return
        for folder in (store, os.path.join(store, "video")):
            name = os.path.join(folder, probe)
            with open(name, "wb"):
                pass
            os.unlink(name)
    except OSError as e:
        raise ExtractError(f"{store}: the store is not writable ({e.strerror or e})") from None


def _open_or_create(store: str, manifest, layout: StoreLayout, storage_options: dict | None) -> None:
    """Create the store, or check that an existing one belongs to this dataset and can be
    written."""
    exists = (not is_url(store) and os.path.exists(store))
    if is_url(store):
        try:
            read_attrs(store, storage_options)
            exists = True
        except StoreError:
            exists = False
    if not exists:
        try:
            # an absolute data root: readers (the notebook, search) run from other folders
            root = manifest.root if is_url(manifest.root) else os.path.abspath(manifest.root)
            create_store(store, layout=layout, storage_options=storage_options,
                         **{**manifest.store_kwargs(), "data_root": root})
            set_annotation_record(store, manifest.n_val, manifest.warnings, storage_options)
        except StoreError as e:
            raise ExtractError(str(e)) from None
        return
    try:
        attrs = read_attrs(store, storage_options)
    except StoreError as e:
        raise ExtractError(str(e)) from None
    if attrs.get("dataset") != manifest.dataset:
        raise ExtractError(f"{store}: a store of dataset {attrs.get('dataset')!r}, not {manifest.dataset!r}")
    old = StoreLayout.from_json(attrs["layout"])
    if (old.n_audio_tokens, old.audio_dim, old.dim) != (layout.n_audio_tokens, layout.audio_dim, layout.dim):
        raise ExtractError(f"{store}: made for {old.n_audio_tokens}x{old.audio_dim} audio tokens and "
                           f"{old.dim}-d CLIP features; these encoders give {layout.n_audio_tokens}x"
                           f"{layout.audio_dim} and {layout.dim}")
    _check_writable(store, storage_options)
    # the annotations' current values go into the store (edited captions, moved splits,
    # fixed URLs; removed ids marked removed): their items are redone by the fingerprints
    try:
        said = apply_manifest(store, manifest, storage_options)
    except StoreError as e:
        raise ExtractError(str(e)) from None
    if said:
        LOG.info("annotations changed: %s", said)


def _check_provenance(store: str, cfg: ExtractConfig, encoders: dict[str, object]) -> None:
    """Refuse, before any step, encoders other than those that made the features already in
    the store (run under the store lock, so no other run can start a step meanwhile)."""
    prov = read_attrs(store, cfg.storage_options).get("provenance", {})
    for spec in REGISTRY.values():
        old, enc = prov.get(spec.name), encoders.get(spec.encoder)
        if old is None or enc is None:
            continue
        new = enc.provenance()
        if (old.get("model"), old.get("weights_sha256")) == (new["model"], new["weights_sha256"]):
            continue
        writer = StepWriter(store, spec.name, storage_options=cfg.storage_options)
        if np.any(writer.states() == DONE):
            raise ExtractError(f"{store}: {spec.name} features come from {old.get('model')} (sha256 "
                               f"{str(old.get('weights_sha256'))[:16]}), this run's encoder is {new['model']} "
                               f"(sha256 {str(new['weights_sha256'])[:16]}): mixing them is refused")


def store_layout(manifest, cfg: ExtractConfig) -> StoreLayout:
    """The new store's sizes: frames and words per the config, else the dataset's (the
    manifest's), else the defaults; widths and audio token geometry from the encoder registry."""
    from extractors.encoders import clip_geometry

    try:
        clip = clip_geometry(cfg.clip_model)
        ast = ast_config(cfg.encoders()).geometry()
    except ValueError as e:
        raise ExtractError(str(e)) from None
    return StoreLayout(n_videos=manifest.n_videos, n_captions=len(manifest.caption_text),
                       n_frames=cfg.n_frames or manifest.n_frames or StoreLayout.n_frames,
                       dim=clip.embed_dim, n_words=cfg.n_words or manifest.n_words or clip.context_length,
                       n_audio_tokens=ast.n_tokens, audio_dim=ast.hidden_size,
                       audio_special_tokens=ast.special_tokens, audio_freq_patches=ast.freq_patches,
                       audio_time_patches=ast.time_patches, video_chunk=cfg.video_chunk)


def read_source(cfg: ExtractConfig, *, data_root: str | None = None, manifest: str | None = None,
                dataset: str | None = None):
    """The manifest of a registered dataset's folder (``dataset`` + ``data_root``; its
    reader takes ``cfg.dataset_options``), or of a CSV/JSONL manifest file (``dataset``
    then names it; ``data_root``: where its relative paths point)."""
    from extractors.annotations import AnnotationError, read_manifest_file
    from extractors.datasets import read_dataset

    named = {"dataset": dataset} if dataset else {}
    if cfg.n_val is not None:
        named["n_val"] = cfg.n_val
    try:
        if manifest and not data_root:
            return read_manifest_file(manifest, **named)
        if manifest:
            return read_annotations(data_root, cfg.storage_options,
                                    lambda root: read_manifest_file(manifest, root, **named))
        if dataset and data_root:
            return read_annotations(data_root, cfg.storage_options,
                                    lambda root: read_dataset(dataset, root, **cfg.reader_options()))
    except AnnotationError as e:
        raise ExtractError(str(e)) from None
    raise ExtractError("give dataset= and data_root= (a registered dataset's folder), "
                       "or manifest= (a CSV/JSONL manifest)")


# --- the run ----------------------------------------------------------------------------------
def run_extraction(manifest, store: str, cfg: ExtractConfig, executor: Executor | None = None, *,
                   run_id: str | None = None, progress: bool | None = None, log: logging.Logger = LOG,
                   report: Callable[[str], None] | None = None) -> dict:
    """Run ``cfg.steps`` on ``store`` (created from ``manifest`` if missing), the blocks on
    ``executor`` (default ``InlineExecutor``; a Dask ``Client`` works too). Returns the run
    summary; ``report(markdown)`` gets it as a table first. ``progress``: a bar per step
    (None: when stderr is a terminal). A Ctrl-C (``KeyboardInterrupt``) cancels the blocks
    not started, releases the store lock and propagates: nothing in hand is recorded."""
    if not store:
        raise ExtractError("no store path given (store=...)")
    if is_url(store):  # a missing bucket or refused credentials: one line, before the encoders load
        check_url(store, cfg.storage_options)
    for w in manifest.warnings:
        log.warning("annotations: %s", w)
    media = cfg.media_dir or (store.rstrip("/") + ".media" if not is_url(store) else None)
    if media is None:
        raise ExtractError(f"{store}: a remote store needs --media-dir (a folder every worker can read)")
    cfg = cfg.model_copy(update={"media_dir": media})
    layout = store_layout(manifest, cfg)
    encoders = load_encoders(cfg)
    from storage.lock import StoreLock

    # One run per store: taken before the provenance check and the first step. The workers
    # of this run write under it (block ownership keeps them apart).
    lock = StoreLock(store, run_id or uuid.uuid4().hex, storage_options=cfg.storage_options, wait_s=cfg.lock_wait_s)
    try:
        lock.acquire()
    except StoreError as e:
        raise ExtractError(str(e)) from None
    try:
        if lock.took_over:
            log.warning("store lock: %s", lock.took_over)
        _open_or_create(store, manifest, layout, cfg.storage_options)
        _check_provenance(store, cfg, encoders)
        if not is_url(media):
            try:
                os.makedirs(media, exist_ok=True)
            except OSError as e:
                raise ExtractError(f"{media}: cannot create the media folder ({e.strerror})") from None
        log.info("store %s: %d videos, %d captions; steps %s", store, manifest.n_videos,
                 len(manifest.caption_text), ", ".join(cfg.steps))
        summary = run_steps(store, cfg, executor or InlineExecutor(), progress=progress, log=log)
    finally:
        lock.release()
    return _finish(manifest, store, cfg, summary, log, report)


def run_steps(store: str, cfg: ExtractConfig, executor: Executor, *, progress: bool | None = None,
              log: logging.Logger = LOG) -> dict[str, dict]:
    """Each step of ``cfg.steps`` in registry order; per step its counts and seconds."""
    summary: dict[str, dict] = {}
    for spec in plan(cfg.steps):
        t0 = time.perf_counter()
        n_changed, why = changed_items(store, spec.name, cfg)
        if n_changed:
            log.info("%s: %d item(s) to redo, their inputs changed: %s", spec.name, n_changed, why)
        if spec.scope == "store":
            res = _submit(executor, spec, store, None, cfg).result()
            res.pop("worker", None)
        else:
            res = _run_blocks(spec, store, cfg, executor, progress, log)
        record_inputs(store, spec.name, cfg.storage_options)
        if n_changed:
            res["changed"] = why
        summary[spec.name] = {**res, "seconds": round(time.perf_counter() - t0, 2)}
        log.info("%s: %s", spec.name, summary[spec.name])
    return summary


def _is_dask_client(executor) -> bool:
    return type(executor).__module__.startswith("distributed") and hasattr(executor, "scheduler_info")


def _submit(executor: Executor, spec: StepSpec, store: str, idx: list[int] | None, cfg: ExtractConfig):
    args = (spec.name, store, idx, cfg)
    if _is_dask_client(executor):
        # a key the scheduler shows per step; a model step asks for the worker's one GPU
        gpu = {"GPU": 1} if cfg.gpu_per_worker and spec.encoder else None
        return executor.submit(run_block, *args, key=f"{spec.name}_block-{uuid.uuid4().hex}", pure=False,
                               resources=gpu)
    return executor.submit(run_block, *args)


def _cause(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0]


def _run_blocks(spec: StepSpec, store: str, cfg: ExtractConfig, executor: Executor, progress: bool | None,
                log: logging.Logger) -> dict:
    """Submit one call per pending block, collect them in order, and record blocks that
    crashed as a whole (a bug, a dead worker) as failed items (``"refused"``: the first
    block's refusal, see ``REFUSALS``). ``"workers"``: blocks per worker that ran them."""
    from tqdm import tqdm

    writer = StepWriter(store, spec.name, storage_options=cfg.storage_options)
    blocks = list(writer.pending_blocks())
    if not blocks:
        log.info("%s: nothing to do (all items done)", spec.name)
        return {"done": 0, "failed": 0, "skipped": int(writer.n_items)}
    log.info("%s: %d item(s) in %d block(s)", spec.name, sum(b.size for b in blocks), len(blocks))
    total: dict = {"done": 0, "failed": 0, "workers": {}}
    # the executor's own retries (a Prefect task's) replace ours
    retries = 0 if getattr(executor, "retries_blocks", False) else spec.retries
    bar = tqdm(total=sum(b.size for b in blocks), desc=spec.name, unit="item",
               disable=None if progress is None else not progress)

    def collect(b: np.ndarray, fut) -> None:
        for attempt in range(retries + 1):
            try:
                res = fut.result()
                break
            except Exception as e:  # noqa: BLE001 - recorded below, or tried again
                if attempt == retries:
                    return _crashed(b, e)
                log.warning("%s block %d: %s; again in %g s", spec.name, int(b[0]), _cause(e), spec.retry_delay_s)
                time.sleep(spec.retry_delay_s)
                fut = _submit(executor, spec, store, b.tolist(), cfg)
        total["done"] += res["done"]
        total["failed"] += res["failed"]
        total["workers"][res["worker"]] = total["workers"].get(res["worker"], 0) + 1
        bar.update(b.size)

    def _crashed(b: np.ndarray, e: BaseException) -> None:
        # the block crashed as a whole: its items are marked failed with the cause, the
        # other blocks and steps go on
        if isinstance(e, REFUSALS):  # the step's own check said no: the run fails with it
            total.setdefault("refused", str(e).splitlines()[0])
        log.error("%s block %d failed: %s", spec.name, int(b[0]), _cause(e))
        w = StepWriter(store, spec.name, storage_options=cfg.storage_options)
        todo = b[np.isin(b, w.pending())]
        if todo.size:
            w.write(todo, errors={int(i): f"{spec.name} task failed: {_cause(e)}" for i in todo})
        total["failed"] += int(todo.size)
        bar.update(b.size)

    limit = getattr(executor, "_max_workers", None)
    in_flight: deque = deque()
    try:
        for b in blocks:
            in_flight.append((b, _submit(executor, spec, store, b.tolist(), cfg)))
            while limit is not None and len(in_flight) > limit:
                collect(*in_flight.popleft())
        while in_flight:
            collect(*in_flight.popleft())
    except BaseException:
        for _, fut in in_flight:  # a Ctrl-C: nothing more starts
            if hasattr(fut, "cancel"):
                fut.cancel()
        raise
    finally:
        bar.close()
    return total


def _finish(manifest, store: str, cfg: ExtractConfig, summary: dict, log: logging.Logger,
            report: Callable[[str], None] | None) -> dict:
    fails = failures(store, cfg.storage_options)
    warned = [*(f"annotations: {w}" for w in manifest.warnings),
              *(f"{step}: {s['warning']}" for step, s in summary.items() if s.get("warning"))]
    if report is not None:
        report(summary_markdown(store, summary, fails, warned))
    for w in warned:
        log.warning("%s", w)
    for f in fails[:50]:
        log.warning("failed: %s %s: %s", f["step"], f["item"], f["error"])
    refused = [f"{step} refused: {s['refused']}" for step, s in summary.items() if "refused" in s]
    if refused:
        raise ExtractError("; ".join(refused))
    return {"store": store, "steps": summary, "failures": len(fails), "warnings": warned}


def summary_markdown(store: str, summary: dict, fails: list[dict], warned: list[str]) -> str:
    """The run summary as a markdown page: per-step counts, warnings, failed items."""
    lines = [f"# Extraction summary: `{store}`", "", "| step | done | failed | seconds |", "|---|---|---|---|"]
    for step, s in summary.items():
        lines.append(f"| {step} | {s.get('done', '-')} | {s.get('failed', s.get('problems', '-'))} "
                     f"| {s.get('seconds', '-')} |")
    if warned:
        lines += ["", f"## Warnings ({len(warned)})", "", *(f"- {w}" for w in warned)]
    lines += ["", f"## Failed items ({len(fails)})", ""]
    if fails:
        lines += ["| step | item | error |", "|---|---|---|"]
        lines += [f"| {f['step']} | {f['item']} | {f['error'].replace('|', '/')} |" for f in fails[:500]]
    else:
        lines.append("none")
    return "\n".join(lines)
