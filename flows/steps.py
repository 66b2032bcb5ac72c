"""The extraction steps: each is a compute function (the extractors do the work) plus a
few declarative arguments to ``flows.step_io.run_step_items``, which owns the store I/O.

``write_<step>(store, [encoder,] cfg, ...)`` runs one step on the store's pending items
(or on ``indices=``: one block); the Prefect tasks (``flows.tasks``) wrap them, one task per
owned store block, so a re-run after a crash redoes nothing finished. Per-item failures are
written into the store (``<step>_state`` = failed, ``<step>_error`` = the one-line cause)
and never fail the task.
"""
from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from extractors.engine import ItemResult
from extractors.style import REWRITES
from flows.config import EncoderSpec, ExtractConfig
from flows.remote import Scratch
from flows.step_io import StepInputs, check_same_clip, merge_errors, run_step_items
from storage import (DONE, MISSING, StepWriter, as_str, layout_of, open_group, read_attrs, set_provenance,
                     set_step_warning, write_table)

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
                               random_init=spec.random_init, device=spec.device, context_length=spec.context_length)


def ast_config(spec: EncoderSpec):
    """The AST's config for ``spec`` (its geometry from ``extractors.encoders``)."""
    from dataclasses import asdict

    from extractors.ast_encoder import AstEncoderConfig
    from extractors.encoders import ast_geometry

    geometry = ast_geometry(spec.ast_size)
    if spec.ast_size != "base" and spec.ast_weights:
        raise ValueError(f"--ast-size {spec.ast_size} is for random weights only")
    shape = {k: v for k, v in asdict(geometry).items() if k != "special_tokens"}
    return AstEncoderConfig(weights=spec.ast_weights, random_init=spec.random_init, device=spec.device,
                            fbank_shift=spec.fbank_shift, **shape)


def ast_encoder(spec: EncoderSpec):
    with _BUILD_LOCK:
        return _ast_encoder(spec)


@functools.lru_cache(maxsize=2)
def _ast_encoder(spec: EncoderSpec):
    from extractors.ast_encoder import create_ast_encoder
    return create_ast_encoder(ast_config(spec))


Errors = Callable[[int, str], None] | None


def _scratch(cfg: ExtractConfig) -> Scratch:
    return Scratch(cfg.scratch_dir, int(cfg.scratch_gb * 1e9), cfg.storage_options)


def _video_sources(inp: StepInputs) -> list[str]:
    return [inp.resolve(p) for p in inp.column("video_path")]


# --- media steps --------------------------------------------------------------------------
def write_probe(store: str, cfg: ExtractConfig, **run) -> dict:
    """Duration, fps, display size, rotation and audio presence of each source video."""
    from extractors.errors import MediaError
    from extractors.probe import probe

    def compute(inp: StepInputs) -> Iterator[ItemResult]:
        for j, path in enumerate(inp.paths("video_path")):
            try:
                p = probe(path)
                if not p.has_video:
                    raise MediaError(p.path, "no video stream")
            except MediaError as e:
                yield ItemResult(j, None, str(e))
                continue
            yield ItemResult(j, {"duration": np.float32(p.duration), "fps": np.float32(p.fps),
                                 "width": np.int32(p.width), "height": np.int32(p.height),
                                 "rotation": np.int16(p.rotation), "source_has_audio": np.bool_(p.has_audio)})

    return run_step_items(store, "probe", compute, storage_options=cfg.storage_options,
                          sources=_video_sources, scratch=_scratch(cfg), **run)


def write_crawl(store: str, cfg: ExtractConfig, **run) -> dict:
    """Original audio where the file has it; otherwise fetch it from the annotation's URL.
    Audio features made while a video had no audio are stale once the crawl finds it."""
    from extractors.crawl import crawl_audio

    crawled: list[int] = []

    def compute(inp: StepInputs) -> Iterator[ItemResult]:
        probed = inp.column("probe_state") == DONE
        has, src, url = inp.column("source_has_audio"), inp.column("video_path"), inp.column("url")
        start, end, ids = inp.column("start_time"), inp.column("end_time"), inp.column("video")
        for j in range(len(inp)):
            if not probed[j]:
                yield ItemResult(j, None, "probe step not done for this video (no audio decision possible)")
            elif has[j]:
                yield ItemResult(j, {"audio_source": "original", "audio_path": src[j]})
            elif not url[j]:
                yield ItemResult(j, None, "no audio stream and no URL to crawl it from")
            else:
                out = os.path.join(cfg.media_dir, "audio", f"{ids[j]}.wav")
                os.makedirs(os.path.dirname(out), exist_ok=True)
                r = crawl_audio(url[j], float(start[j]) if start[j] >= 0 else None,
                                float(end[j]) if end[j] > 0 else None, out, allow_file_urls=cfg.allow_file_urls,
                                retries=cfg.crawl_retries, timeout_s=cfg.crawl_timeout_s)
                if r.status != "crawled":
                    yield ItemResult(j, None, f"crawl {url[j]}: {r.error}")
                    continue
                crawled.append(int(inp.idx[j]))
                yield ItemResult(j, {"audio_source": "crawled", "audio_path": os.path.abspath(r.path)})

    res = run_step_items(store, "crawl", compute, storage_options=cfg.storage_options, **run)
    audio = StepWriter(store, "audio", storage_options=cfg.storage_options)
    found = np.asarray(crawled, dtype=np.int64)
    stale = found[audio.states()[found] == DONE] if found.size else found
    for b in np.unique(stale // audio.block_size):
        audio.reset(stale[stale // audio.block_size == b])
    return res


def write_compress(store: str, cfg: ExtractConfig, **run) -> dict:
    """A 3 fps, short side 224 copy of each video under the media folder."""
    from extractors.compress import compress_many

    def compute(inp: StepInputs) -> Iterator[ItemResult]:
        out_dir = os.path.join(cfg.media_dir, "compressed")
        os.makedirs(out_dir, exist_ok=True)
        pairs = [(p, os.path.join(out_dir, f"{v}.mp4")) for p, v in zip(inp.paths("video_path"), inp.column("video"))]
        for j, r in enumerate(compress_many(pairs, workers=cfg.workers, keep_audio=cfg.keep_audio, progress=False)):
            yield ItemResult(j, None, r.error) if r.status == "failed" else \
                ItemResult(j, {"compressed_path": os.path.abspath(r.dst)})

    return run_step_items(store, "compress", compute, storage_options=cfg.storage_options,
                          sources=_video_sources, scratch=_scratch(cfg), **run)


# --- encoder steps --------------------------------------------------------------------------
FRAME_BACKEND = "decord"


def write_frames(store: str, encoder, cfg: ExtractConfig, **run) -> dict:
    """Frame features, decoded from the compressed copy when the compress step made one,
    else from the source video: the store's ``n_frames`` of them, from its first
    ``max_seconds`` (an attribute; None: the whole video)."""
    from extractors.engine import encode_frames

    n_frames = layout_of(store, cfg.storage_options).n_frames
    max_seconds = read_attrs(store, cfg.storage_options).get("max_seconds")

    def sources(inp: StepInputs) -> list[str]:
        comp_ok = inp.column("compress_state") == DONE
        src, comp = inp.column("video_path"), inp.column("compressed_path")
        return [inp.resolve(c if ok and c else s) for s, c, ok in zip(src, comp, comp_ok)]

    def compute(inp: StepInputs) -> Iterator[ItemResult]:
        return encode_frames(encoder, [inp.file(p) for p in sources(inp)], batch_size=cfg.frame_batch_size,
                             workers=cfg.workers, n_frames=n_frames, max_seconds=max_seconds,
                             backend=FRAME_BACKEND, timeout_s=cfg.decode_timeout_s)

    return run_step_items(
        store, "frames", compute, storage_options=cfg.storage_options, sources=sources, scratch=_scratch(cfg),
        check=lambda lay: None if lay.dim == encoder.dim else
        f"the store holds {lay.dim}-d frame features, the encoder gives {encoder.dim}",
        provenance=encoder.provenance(n_frames=n_frames, max_seconds=max_seconds, backend=FRAME_BACKEND), **run)


def write_audio(store: str, encoder, cfg: ExtractConfig, **run) -> dict:
    """AST tokens from the crawl step's ``audio_path``; videos whose ``audio_source`` is
    ``none`` get zeros and ``has_audio`` False (done, not failed)."""
    from extractors.engine import encode_audio

    def plan(inp: StepInputs) -> tuple[list[str | None], list[int]]:
        """The file each item's audio is decoded from (None: silent), and the items whose
        audio source is not known yet."""
        # a failed crawl is a decision too (audio_source stays "none"); only a crawl that
        # has not run yet leaves the audio source unknown
        crawl_ok = inp.column("crawl_state") != MISSING
        # a video whose own file has audio needs no crawl: the probe decides for it
        own = (inp.column("probe_state") == DONE) & inp.column("source_has_audio").astype(bool)
        source, raw, src = inp.column("audio_source"), inp.column("audio_path"), inp.column("video_path")
        files = [inp.resolve(src[j]) if not crawl_ok[j] else None if source[j] == "none" or not raw[j]
                 else inp.resolve(raw[j]) for j in range(len(inp))]
        return files, [j for j in range(len(inp)) if not crawl_ok[j] and not own[j]]

    def sources(inp: StepInputs) -> list[str | None]:
        files, not_ready = plan(inp)
        return [None if j in not_ready else f for j, f in enumerate(files)]

    def compute(inp: StepInputs) -> Iterator[ItemResult]:
        files, unknown = plan(inp)
        not_ready = {j: "audio source unknown: the crawl step is not done for this video" for j in unknown}
        run_pos = np.array([j for j in range(len(inp)) if j not in not_ready], dtype=np.int64)
        paths = [inp.file(files[j]) for j in run_pos]
        res = encode_audio(encoder, paths, batch_size=cfg.audio_batch_size, workers=cfg.workers)
        return merge_errors((ItemResult(int(run_pos[r.index]), r.data, r.error) for r in res), not_ready)

    return run_step_items(
        store, "audio", compute, storage_options=cfg.storage_options, sources=sources, scratch=_scratch(cfg),
        check=lambda lay: None if (lay.n_audio_tokens, lay.audio_dim) == (encoder.n_tokens, encoder.dim) else
        f"the store holds {lay.n_audio_tokens} x {lay.audio_dim} audio tokens, "
        f"the AST gives {encoder.n_tokens} x {encoder.dim}",
        provenance=encoder.provenance(), **run)


def _caption_check(encoder) -> Callable:
    def check(lay) -> str | None:
        if lay.dim != encoder.dim or lay.n_words != encoder.config.context_length:
            return (f"the store holds {lay.n_words} x {lay.dim} caption tokens, the encoder "
                    f"gives {encoder.config.context_length} x {encoder.dim}")
        return None
    return check


def write_text(store: str, encoder, cfg: ExtractConfig, **run) -> dict:
    """Caption token features, masks and EOT embeddings."""
    from extractors.engine import encode_captions

    return run_step_items(
        store, "text",
        lambda inp: encode_captions(encoder, inp.column("caption_text").tolist(), batch_size=cfg.text_batch_size),
        storage_options=cfg.storage_options, check=_caption_check(encoder), provenance=encoder.provenance(), **run)


# --- whole-store steps ----------------------------------------------------------------------
def write_tags(store: str, encoder, cfg: ExtractConfig, *, progress: bool = False, on_error: Errors = None) -> dict:
    """Mine the training captions, write the phrase table (once), rank phrases for every
    pending video whose frames are done. Videos whose frames failed or are missing are
    recorded as failed tag items (retried on the next run)."""
    from extractors.tags import PHRASE_TEMPLATE, encode_phrases, mean_frame_embedding, mine_phrases, rank_tags

    g = open_group(store, mode="r", storage_options=cfg.storage_options)
    split, cap_video = as_str(g["split"][:]), np.asarray(g["caption_video"][:])
    train = [t for t, v in zip(as_str(g["caption_text"][:]), cap_video) if 0 <= v < len(split) and split[v] == "train"]
    phrases = mine_phrases(train, min_count=cfg.tag_min_count)
    if not phrases:
        return _cannot_run(store, "tags", cfg, f"no phrase occurs in at least {cfg.tag_min_count} of the "
                           f"{len(train)} training captions (lower --tag-min-count)")
    texts = [p for p, _ in phrases]
    record = encoder.provenance(template=PHRASE_TEMPLATE, mining={
        "source": "train captions", "n_train_captions": len(train), "min_count": cfg.tag_min_count,
        "n_phrases": len(texts)}, ranking="cosine(phrase EOT, mean of sampled frame embeddings)")
    check_same_clip(store, read_attrs(store, cfg.storage_options), record, "frames", "tags need")
    set_provenance(store, "tags", record, storage_options=cfg.storage_options)
    columns = {"phrase_text": np.array(texts, str), "phrase_count": np.array([c for _, c in phrases], np.int32)}
    complete = "phrase_state" in g and bool((np.asarray(g["phrase_state"][:]) == DONE).all())
    if not complete:
        columns["phrase_embedding"] = encode_phrases(encoder, texts, batch_size=cfg.text_batch_size)
    write_table(store, "phrase", columns, storage_options=cfg.storage_options,
                conflict="the store holds a different phrase table than the training captions give now; "
                         "remove the tags to re-mine")
    emb = np.asarray(open_group(store, mode="r", storage_options=cfg.storage_options)["phrase_embedding"][:],
                     dtype=np.float32)

    def compute(inp: StepInputs) -> Iterator[ItemResult]:
        k = inp.layout.n_tags
        frames_ok = inp.column("frames_state") == DONE
        feats, mask = inp.group["frame_features"], inp.group["frame_mask"]
        for s in range(0, len(inp), inp.layout.video_chunk):  # a block of frames at a time
            pos = np.arange(s, min(s + inp.layout.video_chunk, len(inp)))
            ok = pos[frames_ok[pos]]
            ranked = {}
            if ok.size:
                rows = inp.idx[ok]
                ti, ts = rank_tags(mean_frame_embedding(feats.oindex[rows], mask.oindex[rows]), emb, k=k)
                ranked = dict(zip(ok.tolist(), zip(ti, ts)))
            for j in pos.tolist():
                if j in ranked:
                    yield ItemResult(int(j), {"tag_index": ranked[j][0], "tag_score": ranked[j][1]})
                else:
                    yield ItemResult(int(j), None, "frames step not done for this video")

    res = run_step_items(store, "tags", compute, storage_options=cfg.storage_options, provenance=record,
                         progress=progress, on_error=on_error)
    set_step_warning(store, "tags", None, storage_options=cfg.storage_options)
    return {"phrases": len(texts), **res}


def write_style(store: str, encoder, cfg: ExtractConfig, *, splits: Sequence[str] = ("test",),
                styles: Sequence[str] = tuple(REWRITES), seed: int = 0, progress: bool = False,
                on_error: Errors = None) -> dict:
    """Plan the rewrites of each ``splits`` video's first caption (the style table's rows),
    then encode the pending rows. A store holding other complete rows is refused."""
    from extractors.engine import encode_captions
    from extractors.style import plan_rewrites

    unknown = [s for s in styles if s not in REWRITES]
    if unknown:
        raise ValueError(f"unknown style {unknown[0]!r} (known: {', '.join(REWRITES)})")
    g = open_group(store, mode="r", storage_options=cfg.storage_options)
    source, style, text = plan_rewrites(as_str(g["caption_text"][:]), np.asarray(g["caption_video"][:]),
                                        as_str(g["split"][:]), splits=splits, styles=styles, seed=seed)
    if source.size == 0:
        return _cannot_run(store, "style", cfg, f"no caption of a video in split(s) {', '.join(splits)} "
                           "to rewrite")
    attrs = read_attrs(store, cfg.storage_options)
    if "text" not in attrs.get("provenance", {}):
        return _cannot_run(store, "style", cfg, "the text step has not run; run `vtr extract --steps text` "
                           "before style")
    record = encoder.provenance(styles=list(styles), splits=list(splits), seed=seed,
                                rows="first caption of each video x style")
    check_same_clip(store, attrs, record, "text", "style needs")
    write_table(store, "style_caption", {"style_caption_source": source, "style_caption_style": style,
                                         "style_caption_text": text}, storage_options=cfg.storage_options,
                conflict="the store already holds style captions other than these; "
                         "remove the style_caption_* arrays to write new ones")
    def compute(inp: StepInputs) -> Iterator[ItemResult]:
        for r in encode_captions(encoder, inp.column("style_caption_text").tolist(), batch_size=cfg.text_batch_size):
            yield ItemResult(r.index, r.data and {f"style_{k}": v for k, v in r.data.items()}, r.error)

    res = run_step_items(
        store, "style", compute,
        storage_options=cfg.storage_options, check=_caption_check(encoder), provenance=record,
        progress=progress, on_error=on_error)
    set_step_warning(store, "style", None, storage_options=cfg.storage_options)
    return {"rows": int(source.size), **res}


def _cannot_run(store: str, step: str, cfg: ExtractConfig, why: str) -> dict:
    """A whole-store step the data does not allow (too few captions, no test split) is a
    warning, not a failure: recorded in the store (``vtr store info``) and returned for the
    run summary, and the other steps' results stand."""
    set_step_warning(store, step, why, storage_options=cfg.storage_options)
    return {"done": 0, "failed": 0, "warning": why}


# --- the step registry -------------------------------------------------------------------
MEDIA_WRITERS = {"probe": write_probe, "crawl": write_crawl, "compress": write_compress}
ENCODER_WRITERS = {"frames": (write_frames, clip_encoder), "audio": (write_audio, ast_encoder),
                   "text": (write_text, clip_encoder)}
WHOLE_STORE_WRITERS = {"tags": write_tags, "style": write_style}


def worker_address() -> str:
    """The Dask worker running this task (its address, as the scheduler names it), else
    ``local``: the run summary counts blocks per worker."""
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return "local"
