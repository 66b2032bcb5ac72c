"""The extraction flows: a raw dataset folder in, a complete feature store out.

``extract-msrvtt`` reads MSR-VTT's annotations, ``extract-dataset`` a generic CSV/JSONL
manifest; both run the same steps, each step as one Prefect task per owned store block
(so parallel workers never write one chunk), in order:
probe -> crawl -> compress -> frames -> audio -> text -> tags -> style -> validate.
Steps run one after the other; the blocks of a step run in parallel on the task runner.
"""
from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Literal

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from extractors.weights import WeightsError
from flows.config import ALL_STEPS, MODEL_STEPS, ExtractConfig
from flows.errors import ExtractError
from flows.remote import check_url, read_annotations
from flows.steps import ast_config, ast_encoder, clip_encoder
from flows.tasks import BLOCK_TASKS, STORE_TASKS, validate_store
from storage import DONE, StepWriter, StoreError, StoreLayout, as_str, create_store, failures, read_attrs
from storage.lock import StoreLock


def _is_url(p: str) -> bool:
    return "://" in p


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


def _load_encoders(cfg: ExtractConfig) -> dict[str, object]:
    """Build every encoder the steps will use, so that bad weights (a text file, a truncated
    checkpoint, another architecture) fail the run in one line naming the file before any
    video is probed. The local runner's tasks reuse these (``flows.steps`` caches them)."""
    from extractors.weights import WeightsError

    steps = set(cfg.steps)
    wanted = {}
    if steps & {"frames", "text", "tags", "style"}:
        _check_weights(cfg.clip_weights, "CLIP", "--clip-weights", cfg.random_init)
        wanted["clip"] = (clip_encoder, cfg.clip_weights, f"CLIP {cfg.clip_model}")
    if "audio" in steps:
        _check_weights(cfg.ast_weights, "AST", "--ast-weights", cfg.random_init)
        wanted["ast"] = (ast_encoder, cfg.ast_weights, "AST")
    encoders = {}
    for name, (build, path, what) in wanted.items():
        try:
            encoders[name] = build(cfg.encoders())
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
        if _is_url(store):
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
    exists = (not _is_url(store) and os.path.exists(store))
    if _is_url(store):
        try:
            read_attrs(store, storage_options)
            exists = True
        except StoreError:
            exists = False
    if not exists:
        try:
            # an absolute data root: readers (the notebook, search) run from other folders
            root = manifest.root if _is_url(manifest.root) else os.path.abspath(manifest.root)
            create_store(store, layout=layout, storage_options=storage_options,
                         **{**manifest.store_kwargs(), "data_root": root})
        except StoreError as e:
            raise ExtractError(str(e)) from None
        return
    try:
        attrs = read_attrs(store, storage_options)
    except StoreError as e:
        raise ExtractError(str(e)) from None
    if attrs.get("dataset") != manifest.dataset:
        raise ExtractError(f"{store}: a store of dataset {attrs.get('dataset')!r}, not {manifest.dataset!r}")
    from storage import open_group
    ids = as_str(open_group(store, mode="r", storage_options=storage_options)["video"][:])
    if ids.tolist() != list(manifest.video_ids):
        raise ExtractError(f"{store}: holds other videos than {manifest.root} lists "
                           f"({ids.size} vs {manifest.n_videos}); use a new store path")
    old = StoreLayout.from_json(attrs["layout"])
    if (old.n_audio_tokens, old.audio_dim, old.dim) != (layout.n_audio_tokens, layout.audio_dim, layout.dim):
        raise ExtractError(f"{store}: made for {old.n_audio_tokens}x{old.audio_dim} audio tokens and "
                           f"{old.dim}-d CLIP features; these encoders give {layout.n_audio_tokens}x"
                           f"{layout.audio_dim} and {layout.dim}")
    _check_writable(store, storage_options)


# which encoder made each model step's features (tags and style compare with frames/text)
_STEP_ENCODER = {"frames": "clip", "text": "clip", "tags": "clip", "style": "clip", "audio": "ast"}


def _check_provenance(store: str, cfg: ExtractConfig, encoders: dict[str, object]) -> None:
    """Refuse, before any step, encoders other than those that made the features already in
    the store (run under the store lock, so no other run can start a step meanwhile)."""
    prov = read_attrs(store, cfg.storage_options).get("provenance", {})
    for step, name in _STEP_ENCODER.items():
        old, enc = prov.get(step), encoders.get(name)
        if old is None or enc is None:
            continue
        new = enc.provenance()
        if (old.get("model"), old.get("weights_sha256")) == (new["model"], new["weights_sha256"]):
            continue
        writer = StepWriter(store, step, storage_options=cfg.storage_options)
        if np.any(writer.states() == DONE):
            raise ExtractError(f"{store}: {step} features come from {old.get('model')} (sha256 "
                               f"{str(old.get('weights_sha256'))[:16]}), this run's encoder is {new['model']} "
                               f"(sha256 {str(new['weights_sha256'])[:16]}): mixing them is refused")


def _run_id() -> str:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else uuid.uuid4().hex


def _layout(manifest, cfg: ExtractConfig) -> StoreLayout:
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


# A block task raising one of these refused the step (another model's features in the
# store, unusable weights): not a crash of some items, so the run exits non-zero.
REFUSALS = (StoreError, ExtractError, WeightsError)


def _resources(step: str, cfg: ExtractConfig) -> contextlib.AbstractContextManager:
    """With ``gpu_per_worker``, a model step's tasks ask for one GPU each: a worker started
    with ``--resources GPU=1`` runs one of them at a time."""
    import dask

    if cfg.gpu_per_worker and step in MODEL_STEPS:
        return dask.annotate(resources={"GPU": 1})
    return contextlib.nullcontext()


def _run_step(step: str, store: str, cfg: ExtractConfig, runner: TaskRunner) -> dict:
    """Submit one task per pending block to ``runner``, wait, and record crashed blocks as
    failed items (``"refused"``: the first block's refusal, see ``REFUSALS``). ``"workers"``:
    blocks per worker that ran them."""
    log = get_run_logger()
    writer = StepWriter(store, step, storage_options=cfg.storage_options)
    blocks = list(writer.pending_blocks())
    if not blocks:
        log.info("%s: nothing to do (all items done)", step)
        return {"done": 0, "failed": 0, "skipped": int(writer.n_items)}
    log.info("%s: %d item(s) in %d block(s)", step, sum(b.size for b in blocks), len(blocks))
    task = BLOCK_TASKS[step]
    with _resources(step, cfg):
        futures = [runner.submit(task, {"store": store, "idx": b.tolist(), "first": int(b[0]), "cfg": cfg})
                   for b in blocks]
    total: dict = {"done": 0, "failed": 0, "workers": {}}
    for b, fut in zip(blocks, futures):
        fut.wait()
        state = fut.state
        if state.is_completed():
            res = state.result()
            total["done"] += res["done"]
            total["failed"] += res["failed"]
            total["workers"][res["worker"]] = total["workers"].get(res["worker"], 0) + 1
            continue
        # the block crashed as a whole (a bug, a dead worker): its items are marked failed
        # with the cause, the other blocks and steps go on
        try:
            # the task's exception; a Dask future that never delivered a state (a lost
            # worker, a task that did not unpickle) raises Dask's own here
            exc = fut.result(raise_on_failure=False)
            cause = f"{type(exc).__name__}: {exc}".splitlines()[0] if isinstance(exc, BaseException) else state.message
        except Exception as e:  # noqa: BLE001
            exc, cause = e, f"{type(e).__name__}: {e}".splitlines()[0]
        if isinstance(exc, REFUSALS):  # the step's own check said no: the run fails with it
            total.setdefault("refused", str(exc).splitlines()[0])
        log.error("%s block %d failed: %s", step, int(b[0]), cause)
        w = StepWriter(store, step, storage_options=cfg.storage_options)
        todo = b[np.isin(b, w.pending())]
        if todo.size:
            w.write(todo, errors={int(i): f"{step} task failed: {cause}" for i in todo})
        total["failed"] += int(todo.size)
    return total


def run_extraction(manifest, store: str, cfg: ExtractConfig, dask_address: str | None = None) -> dict:
    """Run ``cfg.steps`` on ``store``; the block tasks on the flow's own runner, or on the
    Dask cluster at ``dask_address`` (see ``block_runner``)."""
    log = get_run_logger()
    steps = set(cfg.steps)
    if _is_url(store):  # a missing bucket or refused credentials: one line, before the encoders load
        check_url(store, cfg.storage_options)
    for w in manifest.warnings:
        log.warning("annotations: %s", w)
    media = cfg.media_dir or (store.rstrip("/") + ".media" if not _is_url(store) else None)
    if media is None:
        raise ExtractError(f"{store}: a remote store needs --media-dir (a folder every worker can read)")
    cfg = cfg.model_copy(update={"media_dir": media})
    layout = _layout(manifest, cfg)
    # the cluster answers (or starts) before the encoders load and the store is touched
    with block_runner(dask_address, cfg.gpu_per_worker) as runner:
        encoders = _load_encoders(cfg)
        # One run per store: taken before the provenance check and the first step. The Dask
        # workers of this run write under it (block ownership keeps them apart).
        lock = StoreLock(store, _run_id(), storage_options=cfg.storage_options, wait_s=cfg.lock_wait_s)
        try:
            lock.acquire()
        except StoreError as e:
            raise ExtractError(str(e)) from None
        try:
            if lock.took_over:
                log.warning("store lock: %s", lock.took_over)
            _open_or_create(store, manifest, layout, cfg.storage_options)
            _check_provenance(store, cfg, encoders)
            return _run_steps(manifest, store, cfg, steps, runner)
        finally:
            lock.release()


def _run_steps(manifest, store: str, cfg: ExtractConfig, steps: set[str], runner: TaskRunner) -> dict:
    log = get_run_logger()
    media = cfg.media_dir
    if not _is_url(media):
        try:
            os.makedirs(media, exist_ok=True)
        except OSError as e:
            raise ExtractError(f"{media}: cannot create the media folder ({e.strerror})") from None
    log.info("store %s: %d videos, %d captions; steps %s", store, manifest.n_videos,
             len(manifest.caption_text), ", ".join(cfg.steps))
    summary: dict[str, dict] = {}
    for step in [s for s in ALL_STEPS if s in steps]:
        t0 = time.perf_counter()
        if step in STORE_TASKS:
            with _resources(step, cfg):
                summary[step] = runner.submit(STORE_TASKS[step], {"store": store, "cfg": cfg}).result()
        elif step == "validate":
            summary[step] = {"problems": len(runner.submit(validate_store, {"store": store, "cfg": cfg}).result())}
        else:
            summary[step] = _run_step(step, store, cfg, runner)
        summary[step]["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("%s: %s", step, summary[step])
    fails = failures(store, cfg.storage_options)
    warned = [*(f"annotations: {w}" for w in manifest.warnings),
              *(f"{step}: {s['warning']}" for step, s in summary.items() if s.get("warning"))]
    _failure_artifact(store, summary, fails, warned)
    for w in warned:
        log.warning("%s", w)
    for f in fails[:50]:
        log.warning("failed: %s %s: %s", f["step"], f["item"], f["error"])
    refused = [f"{step} refused: {s['refused']}" for step, s in summary.items() if "refused" in s]
    if refused:
        raise ExtractError("; ".join(refused))
    return {"store": store, "steps": summary, "failures": len(fails), "warnings": warned}


def _failure_artifact(store: str, summary: dict, fails: list[dict], warned: list[str]) -> None:
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
    create_markdown_artifact(markdown="\n".join(lines), key="extraction-summary",
                             description="per-step counts and failed items")


# Locally, blocks run one at a time: a block already keeps the cores (decode workers) and
# the model busy; parallel blocks are what a Dask cluster (dask_address) is for.
LOCAL_RUNNER = ThreadPoolTaskRunner(max_workers=1)


@flow(name="extract-msrvtt", log_prints=True, task_runner=LOCAL_RUNNER)
def extract_msrvtt(data_root: str, store: str, config: ExtractConfig = ExtractConfig(),
                   train_list: Literal["9k", "7k"] = "9k", n_val: int = 500,
                   dask_address: str | None = None) -> dict:
    """MSR-VTT folder (``MSRVTT_data.json``, train/test csv, ``videos/all``) -> feature store.
    ``dask_address``: run the block tasks on a Dask cluster (``block_runner``)."""
    from extractors.annotations import AnnotationError, read_msrvtt
    try:
        manifest = read_annotations(data_root, config.storage_options, lambda root: read_msrvtt(
            root, train_list=train_list, n_val=n_val, strict=config.strict))
    except AnnotationError as e:
        raise ExtractError(str(e)) from None
    return run_extraction(manifest, store, config, dask_address)


@flow(name="extract-dataset", log_prints=True, task_runner=LOCAL_RUNNER)
def extract_dataset(manifest: str | None = None, store: str = "", config: ExtractConfig = ExtractConfig(),
                    data_root: str | None = None, dataset: str | None = None,
                    dask_address: str | None = None) -> dict:
    """A registered dataset's folder (``dataset=`` its name, ``data_root=`` the folder;
    ``config.dataset_options`` go to its reader), or any dataset from a CSV/JSONL manifest
    (``manifest=``: ``video_id, path, caption[, split]``; ``dataset`` then names it).
    ``dask_address``: run the block tasks on a Dask cluster (``block_runner``)."""
    from extractors.annotations import AnnotationError, read_manifest_file
    from extractors.datasets import read_dataset

    if not store:
        raise ExtractError("no store path given (store=...)")
    try:
        if manifest and not data_root:
            m = read_manifest_file(manifest, **({"dataset": dataset} if dataset else {}))
        elif manifest:
            m = read_annotations(data_root, config.storage_options, lambda root: read_manifest_file(
                manifest, root, **({"dataset": dataset} if dataset else {})))
        elif dataset and data_root:
            m = read_annotations(data_root, config.storage_options,
                                 lambda root: read_dataset(dataset, root, **config.dataset_options))
        else:
            raise ExtractError("give dataset= and data_root= (a registered dataset's folder), "
                               "or manifest= (a CSV/JSONL manifest)")
    except AnnotationError as e:
        raise ExtractError(str(e)) from None
    return run_extraction(m, store, config, dask_address)


# Prefect fixes a flow's task runner when it is decorated; a deployment picks its cluster
# per run, so the flow opens the Dask runner itself and submits the block tasks to it.
CONNECT_TIMEOUT_S = 10


@contextlib.contextmanager
def block_runner(address: str | None, gpu_per_worker: bool = False) -> Iterator[TaskRunner]:
    """The runner of the block tasks. ``None``: the flow's own (one block at a time).
    ``"local:N"``: a ``LocalCluster`` of N worker processes, one thread each (with
    ``GPU=1`` each when ``gpu_per_worker``), closed at the end. Else the address of a
    running scheduler, ``tcp://host:8786``: refused in one line unless it answers."""
    if not address:
        from prefect.context import FlowRunContext

        yield FlowRunContext.get().task_runner
        return
    import dask
    from prefect_dask import DaskTaskRunner

    # Workers must be allowed children: decode workers (DataLoader) and compress pools.
    # Remote workers need the same: DASK_DISTRIBUTED__WORKER__DAEMON=False.
    dask.config.set({"distributed.worker.daemon": False})
    if address.startswith("local"):
        n = address.removeprefix("local:")
        if not n.isdigit() or int(n) < 1:
            raise ExtractError(f"dask address {address!r}: want local:N (N worker processes) or tcp://HOST:PORT")
        kw = {"n_workers": int(n), "threads_per_worker": 1, "processes": True, "dashboard_address": None}
        runner = DaskTaskRunner(cluster_kwargs={**kw, **({"resources": {"GPU": 1}} if gpu_per_worker else {})})
    else:
        runner = DaskTaskRunner(address=address, client_kwargs={"timeout": f"{CONNECT_TIMEOUT_S}s"})
    with runner:
        try:
            runner.client  # noqa: B018 - connects (or starts the LocalCluster) now, before any step
        except (OSError, TimeoutError) as e:
            cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExtractError(f"{address}: no Dask scheduler answers ({cause})") from None
        get_run_logger().info("block tasks on the Dask cluster at %s: %d worker(s)", address,
                              len(runner.client.scheduler_info(n_workers=-1)["workers"]))
        yield runner


if __name__ != "flows.extract":
    # A deployment's entrypoint (flows/extract.py:extract_msrvtt) is loaded from its file as a
    # bare module; Dask's scheduler and workers unpickle the flow (in each task's context)
    # by its module's name, so the flows must be the package's, which they can import.
    from flows.extract import extract_dataset, extract_msrvtt  # noqa: F811
