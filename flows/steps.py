"""Prefect tasks: one step of extraction on one owned block of items.

Each task reads what it needs from the store, calls ``extractors`` for the work and writes
through ``storage.StepWriter``; it skips items the store already marks done, so a re-run
after a crash redoes nothing finished. Per-item failures are written into the store
(``<step>_state`` = failed, ``<step>_error`` = the one-line cause) and never fail the task.
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, field

import numpy as np
from prefect import get_run_logger, task

from storage import DONE, StepWriter, open_group, read_attrs

MEDIA_STEPS = ("probe", "crawl", "compress")
MODEL_STEPS = ("frames", "audio", "text", "tags", "style")
ALL_STEPS = MEDIA_STEPS + MODEL_STEPS + ("validate",)


@dataclass(frozen=True)
class EncoderSpec:
    """What the model steps need to build their frozen encoders (hashable: one per worker)."""

    clip_model: str = "ViT-B-32"
    clip_weights: str | None = None
    ast_weights: str | None = None
    ast_size: str = "base"
    random_init: bool = False
    device: str = "auto"
    fbank_shift: str = "fixed-10ms"


@dataclass(frozen=True)
class StepOptions:
    """Knobs of the steps, passed to every task."""

    media_dir: str
    allow_file_urls: bool = False
    crawl_retries: int = 3
    crawl_timeout_s: float = 120.0
    keep_audio: bool = False
    workers: int = 2
    frame_batch_size: int = 64
    audio_batch_size: int = 8
    text_batch_size: int = 256
    decode_timeout_s: float = 60.0
    tag_min_count: int = 5
    storage_options: dict | None = field(default=None, hash=False, compare=False)


# Geometry of the AST for each size name; "tiny" exists for tests and quick demos (random
# weights only: a weights file brings its own geometry).
AST_SIZES = {
    "base": {},
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
}


# Tasks of one worker share its encoders. Building one seeds torch's global generator, so
# two threads must never build at once (random-init weights would interleave).
_BUILD_LOCK = threading.Lock()


def clip_encoder(spec: EncoderSpec):
    with _BUILD_LOCK:
        return _clip_encoder(spec)


@functools.lru_cache(maxsize=2)
def _clip_encoder(spec: EncoderSpec):
    from extractors.clip_encoder import create_clip_encoder
    return create_clip_encoder(model=spec.clip_model, weights=spec.clip_weights,
                               random_init=spec.random_init, device=spec.device)


def ast_config(spec: EncoderSpec):
    from extractors.ast_encoder import AstEncoderConfig
    if spec.ast_size not in AST_SIZES:
        raise ValueError(f"unknown AST size {spec.ast_size!r} (known: {', '.join(AST_SIZES)})")
    if spec.ast_size != "base" and spec.ast_weights:
        raise ValueError(f"--ast-size {spec.ast_size} is for random weights only")
    return AstEncoderConfig(weights=spec.ast_weights, random_init=spec.random_init, device=spec.device,
                            fbank_shift=spec.fbank_shift, **AST_SIZES[spec.ast_size])


def ast_encoder(spec: EncoderSpec):
    with _BUILD_LOCK:
        return _ast_encoder(spec)


@functools.lru_cache(maxsize=2)
def _ast_encoder(spec: EncoderSpec):
    from extractors.ast_encoder import create_ast_encoder
    return create_ast_encoder(ast_config(spec))


def _column(store: str, name: str, opts: StepOptions) -> np.ndarray:
    return np.asarray(open_group(store, mode="r", storage_options=opts.storage_options)[name][:])


def _resolve(root: str, p: str) -> str:
    return p if os.path.isabs(p) or "://" in p else os.path.join(root, p)


def _log_failures(step: str, errors: dict[int, str], ids: np.ndarray) -> None:
    log = get_run_logger()
    for i, e in errors.items():
        log.warning("%s %s: %s", step, ids[i], e)


@task(name="probe", task_run_name="probe block {first}")
def probe_block(store: str, idx: list[int], first: int, opts: StepOptions) -> dict:
    from extractors.errors import MediaError
    from extractors.probe import probe

    w = StepWriter(store, "probe", storage_options=opts.storage_options)
    root = read_attrs(store, opts.storage_options)["data_root"]
    paths, ids = _column(store, "video_path", opts), _column(store, "video", opts)
    idx = np.asarray(idx)
    cols = {k: [] for k in ("duration", "fps", "width", "height", "rotation", "source_has_audio")}
    errors: dict[int, str] = {}
    for i in idx:
        try:
            p = probe(_resolve(root, str(paths[i])))
            if not p.has_video:
                raise MediaError(p.path, "no video stream")
            row = (p.duration, p.fps, p.width, p.height, p.rotation, p.has_audio)
        except MediaError as e:
            errors[int(i)] = str(e)
            row = (np.nan, np.nan, 0, 0, 0, False)
        for k, v in zip(cols, row):
            cols[k].append(v)
    w.write(idx, {k: np.asarray(v) for k, v in cols.items()}, errors)
    _log_failures("probe", errors, ids)
    return {"done": int(idx.size - len(errors)), "failed": len(errors)}


@task(name="crawl", task_run_name="crawl block {first}", retries=2, retry_delay_seconds=5)
def crawl_block(store: str, idx: list[int], first: int, opts: StepOptions) -> dict:
    """Original audio where the file has it; otherwise fetch it from the annotation's URL."""
    from extractors.crawl import crawl_audio

    w = StepWriter(store, "crawl", storage_options=opts.storage_options)
    g = open_group(store, mode="r", storage_options=opts.storage_options)
    ids = np.asarray(g["video"][:])
    probed = np.asarray(g["probe_state"][:]) == DONE
    has = np.asarray(g["source_has_audio"][:])
    src, url = np.asarray(g["video_path"][:]), np.asarray(g["url"][:])
    start, end = np.asarray(g["start_time"][:]), np.asarray(g["end_time"][:])
    idx = np.asarray(idx)
    source, apath, errors = [], [], {}
    for i in idx:
        i = int(i)
        if not probed[i]:
            errors[i] = "probe step not done for this video (no audio decision possible)"
            source.append("none"), apath.append("")
        elif has[i]:
            source.append("original"), apath.append(str(src[i]))
        elif not str(url[i]):
            errors[i] = "no audio stream and no URL to crawl it from"
            source.append("none"), apath.append("")
        else:
            out = os.path.join(opts.media_dir, "audio", f"{ids[i]}.wav")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            r = crawl_audio(str(url[i]), float(start[i]) if start[i] >= 0 else None,
                            float(end[i]) if end[i] > 0 else None, out,
                            allow_file_urls=opts.allow_file_urls, retries=opts.crawl_retries,
                            timeout_s=opts.crawl_timeout_s)
            if r.status == "crawled":
                source.append("crawled"), apath.append(os.path.abspath(r.path))
            else:
                errors[i] = f"crawl {url[i]}: {r.error}"
                source.append("none"), apath.append("")
    w.write(idx, {"audio_source": np.asarray(source, dtype=str), "audio_path": np.asarray(apath, dtype=str)},
            errors)
    # audio features made while this video had no audio are stale once the crawl finds it
    found = idx[np.asarray(source) == "crawled"]
    audio = StepWriter(store, "audio", storage_options=opts.storage_options)
    stale = found[audio.states()[found] == DONE] if found.size else found
    audio.reset(stale)
    _log_failures("crawl", errors, ids)
    return {"done": int(idx.size - len(errors)), "failed": len(errors)}


@task(name="compress", task_run_name="compress block {first}")
def compress_block(store: str, idx: list[int], first: int, opts: StepOptions) -> dict:
    from extractors.compress import compress_many

    w = StepWriter(store, "compress", storage_options=opts.storage_options)
    root = read_attrs(store, opts.storage_options)["data_root"]
    src, ids = _column(store, "video_path", opts), _column(store, "video", opts)
    idx = np.asarray(idx)
    out_dir = os.path.join(opts.media_dir, "compressed")
    os.makedirs(out_dir, exist_ok=True)
    pairs = [(_resolve(root, str(src[i])), os.path.join(out_dir, f"{ids[i]}.mp4")) for i in idx]
    results = compress_many(pairs, workers=opts.workers, keep_audio=opts.keep_audio, progress=False)
    errors = {int(i): r.error for i, r in zip(idx, results) if r.status == "failed"}
    dst = np.asarray([os.path.abspath(r.dst) for r in results], dtype=str)
    w.write(idx, {"compressed_path": dst}, errors)
    _log_failures("compress", errors, ids)
    return {"done": int(idx.size - len(errors)), "failed": len(errors)}


@task(name="frames", task_run_name="frames block {first}")
def frames_block(store: str, idx: list[int], first: int, spec: EncoderSpec, opts: StepOptions) -> dict:
    from extractors.store_io import write_frames
    return write_frames(store, clip_encoder(spec), indices=idx, batch_size=opts.frame_batch_size,
                        workers=opts.workers, timeout_s=opts.decode_timeout_s,
                        storage_options=opts.storage_options)


@task(name="audio", task_run_name="audio block {first}")
def audio_block(store: str, idx: list[int], first: int, spec: EncoderSpec, opts: StepOptions) -> dict:
    from extractors.store_io import write_audio
    return write_audio(store, ast_encoder(spec), indices=idx, batch_size=opts.audio_batch_size,
                       workers=opts.workers, storage_options=opts.storage_options)


@task(name="text", task_run_name="text block {first}")
def text_block(store: str, idx: list[int], first: int, spec: EncoderSpec, opts: StepOptions) -> dict:
    from extractors.store_io import write_text
    return write_text(store, clip_encoder(spec), indices=idx, batch_size=opts.text_batch_size,
                      storage_options=opts.storage_options)


@task(name="tags")
def tags_step(store: str, spec: EncoderSpec, opts: StepOptions) -> dict:
    """Mining needs every training caption, so the tags step is one task over the store."""
    from extractors.tags import write_tags
    return write_tags(store, clip_encoder(spec), min_count=opts.tag_min_count,
                      storage_options=opts.storage_options)


@task(name="style")
def style_step(store: str, spec: EncoderSpec, opts: StepOptions) -> dict:
    """Writing-style rewrites of each test video's first caption, encoded by the store's CLIP
    (a few rows per test video: one task over the store)."""
    from extractors.style import write_style
    return write_style(store, clip_encoder(spec), batch_size=opts.text_batch_size,
                       storage_options=opts.storage_options)


@task(name="validate")
def validate_store(store: str, opts: StepOptions) -> list[str]:
    from storage import check_store
    problems = check_store(store, opts.storage_options)
    log = get_run_logger()
    for p in problems:
        log.error("store check: %s", p)
    return problems


BLOCK_TASKS = {"probe": probe_block, "crawl": crawl_block, "compress": compress_block,
               "frames": frames_block, "audio": audio_block, "text": text_block}
