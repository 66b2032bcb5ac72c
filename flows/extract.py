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
from typing import Literal

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from flows.steps import (ALL_STEPS, BLOCK_TASKS, MODEL_STEPS, EncoderSpec, StepOptions,
                         ast_config, style_step, tags_step, validate_store)
from storage import (StepWriter, StoreError, StoreLayout, as_str, create_store, failures,
                     read_attrs)

Step = Literal["probe", "crawl", "compress", "frames", "audio", "text", "tags", "style", "validate"]
Device = Literal["auto", "cpu", "cuda"]


class ExtractError(Exception):
    """A problem found before any heavy work starts (one line, naming the path)."""


def _is_url(p: str) -> bool:
    return "://" in p


def _check_weights(path: str | None, what: str, flag: str, random_init: bool) -> None:
    if path is None:
        if not random_init:
            raise ExtractError(f"no {what} weights: pass {flag} PATH, or --random-init for "
                               "meaningless features (tests and demos)")
        return
    if not os.path.exists(path):
        raise ExtractError(f"{path}: {what} weights not found")


def _open_or_create(store: str, manifest, layout: StoreLayout, storage_options: dict | None) -> None:
    """Create the store, or check that an existing one belongs to this dataset."""
    exists = (not _is_url(store) and os.path.exists(store))
    if _is_url(store):
        try:
            read_attrs(store, storage_options)
            exists = True
        except StoreError:
            exists = False
    if not exists:
        try:
            create_store(store, layout=layout, storage_options=storage_options, **manifest.store_kwargs())
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


def _layout(manifest, spec: EncoderSpec, video_chunk: int) -> StoreLayout:
    from extractors.clip_encoder import CLIP_MODELS
    if spec.clip_model not in CLIP_MODELS:
        raise ExtractError(f"unknown CLIP model {spec.clip_model!r} (known: {', '.join(CLIP_MODELS)})")
    try:
        ast = ast_config(spec)
    except ValueError as e:
        raise ExtractError(str(e)) from None
    import open_clip
    dim = int(open_clip.get_model_config(CLIP_MODELS[spec.clip_model])["embed_dim"])
    return StoreLayout(n_videos=manifest.n_videos, n_captions=len(manifest.caption_text),
                       n_audio_tokens=ast.n_tokens(), audio_dim=ast.hidden_size, dim=dim,
                       video_chunk=video_chunk)


def _run_step(step: str, store: str, spec: EncoderSpec, opts: StepOptions, gpu_resources: bool) -> dict:
    """Submit one task per pending block, wait, and record crashed blocks as failed items."""
    import dask

    log = get_run_logger()
    writer = StepWriter(store, step, storage_options=opts.storage_options)
    blocks = list(writer.pending_blocks())
    if not blocks:
        log.info("%s: nothing to do (all items done)", step)
        return {"done": 0, "failed": 0, "skipped": int(writer.n_items)}
    log.info("%s: %d item(s) in %d block(s)", step, sum(b.size for b in blocks), len(blocks))
    task = BLOCK_TASKS[step]
    extra = (spec,) if step in MODEL_STEPS else ()
    annotate = (dask.annotate(resources={"GPU": 1}) if gpu_resources and step in MODEL_STEPS
                else contextlib.nullcontext())
    with annotate:
        futures = [task.submit(store, b.tolist(), int(b[0]), *extra, opts) for b in blocks]
    total = {"done": 0, "failed": 0}
    for b, fut in zip(blocks, futures):
        fut.wait()
        state = fut.state
        if state.is_completed():
            res = state.result()
            total["done"] += res["done"]
            total["failed"] += res["failed"]
            continue
        # the block crashed as a whole (a bug, a dead worker): its items are marked failed
        # with the cause, the other blocks and steps go on
        try:
            exc = state.result(raise_on_failure=False)
            cause = f"{type(exc).__name__}: {exc}".splitlines()[0] if isinstance(exc, BaseException) else state.message
        except Exception as e:  # noqa: BLE001
            cause = str(e).splitlines()[0]
        log.error("%s block %d failed: %s", step, int(b[0]), cause)
        w = StepWriter(store, step, storage_options=opts.storage_options)
        todo = b[np.isin(b, w.pending())]
        if todo.size:
            w.write(todo, errors={int(i): f"{step} task failed: {cause}" for i in todo})
        total["failed"] += int(todo.size)
    return total


def run_extraction(manifest, store: str, *, spec: EncoderSpec, opts: StepOptions, steps: list[str],
                   video_chunk: int = 256, gpu_resources: bool = False) -> dict:
    log = get_run_logger()
    unknown = [s for s in steps if s not in ALL_STEPS]
    if unknown:
        raise ExtractError(f"unknown step(s) {unknown} (steps: {', '.join(ALL_STEPS)})")
    if set(steps) & {"frames", "text", "tags", "style"}:
        _check_weights(spec.clip_weights, "CLIP", "--clip-weights", spec.random_init)
    if "audio" in steps:
        _check_weights(spec.ast_weights, "AST", "--ast-weights", spec.random_init)
    layout = _layout(manifest, spec, video_chunk)
    _open_or_create(store, manifest, layout, opts.storage_options)
    if not _is_url(opts.media_dir):
        try:
            os.makedirs(opts.media_dir, exist_ok=True)
        except OSError as e:
            raise ExtractError(f"{opts.media_dir}: cannot create the media folder ({e.strerror})") from None
    log.info("store %s: %d videos, %d captions; steps %s", store, manifest.n_videos,
             len(manifest.caption_text), ", ".join(steps))
    summary: dict[str, dict] = {}
    for step in [s for s in ALL_STEPS if s in steps]:
        t0 = time.perf_counter()
        if step == "tags":
            summary[step] = tags_step.submit(store, spec, opts).result()
        elif step == "style":
            summary[step] = style_step.submit(store, spec, opts).result()
        elif step == "validate":
            problems = validate_store.submit(store, opts).result()
            summary[step] = {"problems": len(problems)}
        else:
            summary[step] = _run_step(step, store, spec, opts, gpu_resources)
        summary[step]["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("%s: %s", step, summary[step])
    fails = failures(store, opts.storage_options)
    _failure_artifact(store, summary, fails)
    for f in fails[:50]:
        log.warning("failed: %s %s: %s", f["step"], f["item"], f["error"])
    return {"store": store, "steps": summary, "failures": len(fails)}


def _failure_artifact(store: str, summary: dict, fails: list[dict]) -> None:
    lines = [f"# Extraction summary: `{store}`", "", "| step | done | failed | seconds |", "|---|---|---|---|"]
    for step, s in summary.items():
        lines.append(f"| {step} | {s.get('done', '-')} | {s.get('failed', s.get('problems', '-'))} "
                     f"| {s.get('seconds', '-')} |")
    lines += ["", f"## Failed items ({len(fails)})", ""]
    if fails:
        lines += ["| step | item | error |", "|---|---|---|"]
        lines += [f"| {f['step']} | {f['item']} | {f['error'].replace('|', '/')} |" for f in fails[:500]]
    else:
        lines.append("none")
    create_markdown_artifact(markdown="\n".join(lines), key="extraction-summary",
                             description="per-step counts and failed items")


def _common(store: str, clip_model: str, clip_weights: str | None, ast_weights: str | None,
            ast_size: str, random_init: bool, device: str, fbank_shift: str, media_dir: str | None,
            allow_file_urls: bool, crawl_retries: int, keep_audio: bool, workers: int, frame_batch_size: int,
            audio_batch_size: int, text_batch_size: int, tag_min_count: int,
            storage_options: dict | None) -> tuple[EncoderSpec, StepOptions]:
    spec = EncoderSpec(clip_model=clip_model, clip_weights=clip_weights, ast_weights=ast_weights,
                       ast_size=ast_size, random_init=random_init, device=device, fbank_shift=fbank_shift)
    media = media_dir or (store.rstrip("/") + ".media" if not _is_url(store) else None)
    if media is None:
        raise ExtractError(f"{store}: a remote store needs --media-dir (a folder every worker can read)")
    opts = StepOptions(media_dir=media, allow_file_urls=allow_file_urls, crawl_retries=crawl_retries,
                       keep_audio=keep_audio,
                       workers=workers, frame_batch_size=frame_batch_size, audio_batch_size=audio_batch_size,
                       text_batch_size=text_batch_size, tag_min_count=tag_min_count,
                       storage_options=storage_options)
    return spec, opts


# Locally, blocks run one at a time: a block already keeps the cores (decode workers) and
# the model busy; parallel blocks are what --dask is for.
LOCAL_RUNNER = ThreadPoolTaskRunner(max_workers=1)


@flow(name="extract-msrvtt", log_prints=True, task_runner=LOCAL_RUNNER)
def extract_msrvtt(
    data_root: str,
    store: str,
    clip_model: str = "ViT-B-32",
    clip_weights: str | None = None,
    ast_weights: str | None = None,
    ast_size: Literal["base", "tiny"] = "base",
    random_init: bool = False,
    device: Device = "auto",
    steps: list[Step] = list(ALL_STEPS),
    train_list: Literal["9k", "7k"] = "9k",
    n_val: int = 500,
    fbank_shift: Literal["fixed-10ms", "fit-1024"] = "fixed-10ms",
    media_dir: str | None = None,
    allow_file_urls: bool = False,
    crawl_retries: int = 3,
    keep_audio: bool = False,
    workers: int = 2,
    frame_batch_size: int = 64,
    audio_batch_size: int = 8,
    text_batch_size: int = 256,
    tag_min_count: int = 5,
    video_chunk: int = 256,
    gpu_resources: bool = False,
    storage_options: dict | None = None,
) -> dict:
    """MSR-VTT folder (``MSRVTT_data.json``, train/test csv, ``videos/all``) -> feature store."""
    from extractors.annotations import AnnotationError, read_msrvtt
    try:
        manifest = read_msrvtt(data_root, train_list=train_list, n_val=n_val)
    except AnnotationError as e:
        raise ExtractError(str(e)) from None
    spec, opts = _common(store, clip_model, clip_weights, ast_weights, ast_size, random_init, device,
                         fbank_shift, media_dir, allow_file_urls, crawl_retries, keep_audio, workers,
                         frame_batch_size,
                         audio_batch_size, text_batch_size, tag_min_count, storage_options)
    return run_extraction(manifest, store, spec=spec, opts=opts, steps=list(steps),
                          video_chunk=video_chunk, gpu_resources=gpu_resources)


@flow(name="extract-dataset", log_prints=True, task_runner=LOCAL_RUNNER)
def extract_dataset(
    manifest: str,
    store: str,
    data_root: str | None = None,
    dataset: str | None = None,
    clip_model: str = "ViT-B-32",
    clip_weights: str | None = None,
    ast_weights: str | None = None,
    ast_size: Literal["base", "tiny"] = "base",
    random_init: bool = False,
    device: Device = "auto",
    steps: list[Step] = list(ALL_STEPS),
    fbank_shift: Literal["fixed-10ms", "fit-1024"] = "fixed-10ms",
    media_dir: str | None = None,
    keep_audio: bool = False,
    workers: int = 2,
    frame_batch_size: int = 64,
    audio_batch_size: int = 8,
    text_batch_size: int = 256,
    tag_min_count: int = 5,
    video_chunk: int = 256,
    gpu_resources: bool = False,
    storage_options: dict | None = None,
) -> dict:
    """Any dataset from a CSV/JSONL manifest (``video_id, path, caption[, split]``)."""
    from extractors.annotations import AnnotationError, read_manifest_file
    try:
        kw = {"root": data_root} if data_root else {}
        if dataset:
            kw["dataset"] = dataset
        m = read_manifest_file(manifest, **kw)
    except AnnotationError as e:
        raise ExtractError(str(e)) from None
    spec, opts = _common(store, clip_model, clip_weights, ast_weights, ast_size, random_init, device,
                         fbank_shift, media_dir, False, 0, keep_audio, workers, frame_batch_size,
                         audio_batch_size, text_batch_size, tag_min_count, storage_options)
    return run_extraction(m, store, spec=spec, opts=opts, steps=list(steps), video_chunk=video_chunk,
                          gpu_resources=gpu_resources)


def task_runner(dask: str | None, n_workers: int = 2, gpu_per_worker: bool = False):
    """``None``: Prefect's thread pool. ``"local"``: a ``LocalCluster`` of ``n_workers``
    processes (one per GPU when ``gpu_per_worker``). Anything else: a scheduler address."""
    if not dask:
        return None
    import dask as dask_mod
    from prefect_dask import DaskTaskRunner

    # Workers must be allowed children: decode workers (DataLoader) and compress pools.
    # Remote workers need the same: DASK_DISTRIBUTED__WORKER__DAEMON=False.
    dask_mod.config.set({"distributed.worker.daemon": False})
    if dask == "local":
        kw = {"n_workers": n_workers, "threads_per_worker": 1, "processes": True,
              "dashboard_address": None}
        if gpu_per_worker:
            kw["resources"] = {"GPU": 1}
        return DaskTaskRunner(cluster_kwargs=kw)
    return DaskTaskRunner(address=dask)

