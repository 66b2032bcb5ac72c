"""Batched, pipelined inference of the frozen encoders.

Decoding runs in worker processes (``extractors.workers``: one video or clip per item,
in order; by default one per core, less one per GPU in use) while the main process runs
the model; rows from many items are packed into fixed-size batches (a video's 12 frames
may straddle two batches) and results come back per item, in input order, whatever the
batch boundaries. An item whose decode fails, or whose worker dies, yields its error and
no features; the others carry on.

On CUDA: batches assembled in pinned host buffers (two, so one fills while the other's
copy and model run are in flight) with non-blocking copies, the CLIP normalisation and the
fbank on the GPU, fp16 autocast, channels-last input, and the largest batch that fits
(``extractors.device.fitting_batch_size``). On the CPU the same code runs with those
switched off; the fbank then stays in the workers.
"""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from extractors.device import default_workers, fitting_batch_size, pin_memory, preprocess_on_device, to_device
from extractors.workers import ordered_map
from storage.schema import StoreLayout


@dataclass
class ItemResult:
    """One item's features (named as the store's variables) or its one-line error."""

    index: int
    data: dict[str, np.ndarray] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Throughput:
    """Counters a caller can print: items, model rows (frames/clips/captions), seconds."""

    items: int = 0
    failed: int = 0
    rows: int = 0
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.started

    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _error_text(path: object, e: BaseException) -> str:
    from extractors.errors import MediaError, one_line

    if isinstance(e, MediaError):
        return str(e)
    return f"{path}: {type(e).__name__}: {one_line(e)}"


# --- decode side (runs in workers) ------------------------------------------------------------
class FrameItems(torch.utils.data.Dataset):
    """Item i -> (i, valid frames uint8 [k, S, S, 3], mask [n], error)."""

    def __init__(self, paths: Sequence[str | os.PathLike], n_frames: int = StoreLayout.n_frames, size: int = 224,
                 backend: str = "decord", timeout_s: float | None = 60.0, max_seconds: float | None = None):
        self.paths, self.n, self.size, self.backend, self.timeout_s = list(paths), n_frames, size, backend, timeout_s
        self.max_seconds = max_seconds

    def __len__(self) -> int:
        return len(self.paths)

    def failed(self, i: int, why: str):
        return i, None, None, f"{self.paths[i]}: {why}"

    def __getitem__(self, i: int):
        from extractors.frames import load_clip_frames

        try:
            frames, mask = load_clip_frames(self.paths[i], n=self.n, size=self.size, backend=self.backend,
                                            timeout_s=self.timeout_s, max_seconds=self.max_seconds)
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            return i, None, None, _error_text(self.paths[i], e)
        mask = np.asarray(mask, dtype=bool)
        return i, torch.from_numpy(np.ascontiguousarray(frames[mask])), torch.from_numpy(mask), None


class FbankItems(torch.utils.data.Dataset):
    """Item i -> (i, fbank float32 [1, T, F] or an empty [0, T, F] when the path is None
    (no audio), has_audio, error). With ``raw``: the 16 kHz wave [1, samples] instead of
    the fbank (``[0, 0]`` for no audio), for the fbank to run on the model's device."""

    def __init__(self, paths: Sequence[str | os.PathLike | None], fbank_config, raw: bool = False):
        self.paths, self.config, self.raw = list(paths), fbank_config, raw

    def __len__(self) -> int:
        return len(self.paths)

    def failed(self, i: int, why: str):
        return i, None, None, f"{self.paths[i]}: {why}"

    def __getitem__(self, i: int):
        from extractors.audio import load_audio
        from extractors.fbank import compute_fbank

        p, c = self.paths[i], self.config
        if p is None:
            empty = torch.zeros((0, 0) if self.raw else (0, c.target_frames, c.num_mel_bins))
            return i, empty, torch.tensor(False), None
        try:
            wave = load_audio(p, sr=SAMPLE_RATE)
            out = wave if self.raw else compute_fbank(wave, sr=SAMPLE_RATE, config=c)
        except Exception as e:  # noqa: BLE001
            return i, None, None, _error_text(p, e)
        return i, torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))[None], torch.tensor(True), None


SAMPLE_RATE = 16000  # what the AST's fbank expects


def _loader(dataset, workers: int) -> Iterable:
    return ordered_map(dataset, workers, dataset.failed)


def host_buffers(n: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """``n`` host batch buffers, pinned exactly when the batches go to a CUDA device (a
    pinned source is what lets the copy run without blocking the host)."""
    return [torch.empty(shape, dtype=dtype, pin_memory=pin_memory(device)) for _ in range(n)]


# --- packing ----------------------------------------------------------------------------------
@dataclass
class _Pending:
    index: int
    meta: object
    need: int
    out: np.ndarray | None = None
    got: int = 0
    error: str | None = None


def _packed(stream: Iterable, batch_size: int, row_shape: tuple[int, ...], row_dtype: torch.dtype,
            run: Callable[[torch.Tensor], torch.Tensor], out_shape: tuple[int, ...],
            finish: Callable[[_Pending], dict[str, np.ndarray]], device: torch.device,
            stats: Throughput, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
            ) -> Iterator[ItemResult]:
    """Pack the rows of consecutive items into batches of ``batch_size`` and run ``run`` on
    each; yield every item, in order, as soon as all its rows are computed.

    Batches fill host buffers (pinned on CUDA), or buffers on ``device`` when ``prepare``
    (run on each item's rows in this process) already put the rows there. A batch's output
    is read back only after the next batch has been started, so on CUDA the host packs
    and copies while the device computes; two buffers take turns for that."""
    if prepare is None:
        bufs = host_buffers(2, (batch_size, *row_shape), row_dtype, device)
    else:
        bufs = [torch.empty((batch_size, *row_shape), dtype=row_dtype, device=device) for _ in range(2)]
    turn = 0
    staged: deque[tuple[_Pending, int, torch.Tensor]] = deque()  # (item, first row, rows)
    n_staged = 0
    waiting: deque[_Pending] = deque()
    running: deque[tuple[list[tuple[_Pending, int, int]], torch.Tensor]] = deque()

    def collect() -> None:
        parts, out = running.popleft()
        feats = out.cpu().numpy()  # waits for that batch only
        o = 0
        for item, first, take in parts:
            item.out[first:first + take] = feats[o:o + take]
            item.got += take
            o += take

    def flush(n: int) -> None:
        nonlocal n_staged, turn
        buf = bufs[turn]
        turn = 1 - turn
        parts, filled = [], 0
        while filled < n:
            item, first, rows = staged.popleft()
            take = min(n - filled, rows.shape[0])
            buf[filled:filled + take].copy_(rows[:take])
            parts.append((item, first, take))
            if take < rows.shape[0]:
                staged.appendleft((item, first + take, rows[take:]))
            filled += take
        n_staged -= n
        running.append((parts, run(to_device(buf[:n], device))))
        stats.rows += n
        # reading the previous batch back also frees its buffer for the batch after this one
        while len(running) > 1:
            collect()

    def ready() -> Iterator[ItemResult]:
        while waiting and (waiting[0].error is not None or waiting[0].got == waiting[0].need):
            item = waiting.popleft()
            stats.items += 1
            if item.error is not None:
                stats.failed += 1
                yield ItemResult(item.index, None, item.error)
            else:
                yield ItemResult(item.index, finish(item), None)

    for index, rows, meta, error in stream:
        item = _Pending(int(index), meta, 0 if rows is None else int(rows.shape[0]), error=error)
        if error is None:
            item.out = np.zeros((item.need, *out_shape), dtype=np.float32)
            if item.need:
                staged.append((item, 0, rows if prepare is None else prepare(rows)))
                n_staged += item.need
        waiting.append(item)
        while n_staged >= batch_size:
            flush(batch_size)
        yield from ready()
    if n_staged:
        flush(n_staged)
    while running:
        collect()
    yield from ready()
    stats.stop()


def _batch_size(encoder, configured: int, cap: int, model: str, row_shape: tuple[int, ...],
                row_dtype: torch.dtype, run: Callable[[torch.Tensor], torch.Tensor]) -> int:
    def trial(size: int) -> None:
        run(torch.zeros((size, *row_shape), dtype=row_dtype, device=encoder.device)).cpu()

    return fitting_batch_size(encoder.device, configured, cap, f"{model} {encoder.config.precision}",
                              row_shape, trial)


# The batch-size search stops here: past these a GPU is saturated, and larger batches only
# cost pinned host memory (frames: 1024 x 150 KB) and host-side output (AST: 64 x 3.7 MB).
FRAME_BATCH_CAP = 1024
AUDIO_BATCH_CAP = 64


# --- encoders ---------------------------------------------------------------------------------
def encode_frames(encoder, paths: Sequence[str | os.PathLike], *, batch_size: int, timeout_s: float | None,
                  workers: int | None = None, n_frames: int = StoreLayout.n_frames, backend: str = "decord",
                  stats: Throughput | None = None, max_seconds: float | None = None,
                  hidden_layers: int = 0) -> Iterator[ItemResult]:
    """Per video: ``frame_features [n_frames, D]`` (zero in padded slots) and ``frame_mask``;
    frames from the first ``max_seconds`` only when given. Workers decode and resize to
    uint8; the CLIP normalisation runs batched on the encoder's device. ``workers``:
    default ``extractors.device.default_workers``; ``batch_size``: on CUDA, where the search
    for the largest batch that fits starts. ``hidden_layers`` K > 0 adds
    ``frame_hidden_j [n_frames, tokens, width]`` for j = 1..K (``extractors.clip_hidden``)."""
    from extractors.frames import normalize_for_clip

    workers = default_workers(encoder.device) if workers is None else workers
    size = encoder.image_size
    stats = stats if stats is not None else Throughput()
    hidden = (hidden_layers, encoder.visual_tokens, encoder.visual_width) if hidden_layers else None
    n_hidden = int(np.prod(hidden)) if hidden else 0

    def run(x: torch.Tensor) -> torch.Tensor:
        if not hidden:
            return encoder.encode_images(normalize_for_clip(x))
        # one output row per frame: the feature, then the K hidden states (the packing
        # below moves rows of one shape); float32 holds float16 exactly
        feats, states = encoder.encode_images_hidden(normalize_for_clip(x), hidden_layers)
        return torch.cat([feats, states.flatten(1).float()], dim=1)

    row = (size, size, 3)
    batch_size = _batch_size(encoder, batch_size, FRAME_BATCH_CAP, f"clip {encoder.arch}", row, torch.uint8, run)
    loader = _loader(FrameItems(paths, n_frames, size, backend, timeout_s, max_seconds), workers)

    def finish(item: _Pending) -> dict[str, np.ndarray]:
        mask = item.meta.numpy()
        feats = np.zeros((n_frames, encoder.dim), dtype=np.float32)
        feats[mask] = item.out[:, :encoder.dim]
        out = {"frame_features": feats, "frame_mask": mask}
        if hidden:
            states = item.out[:, encoder.dim:].reshape(-1, *hidden)
            for j in range(1, hidden_layers + 1):
                h = np.zeros((n_frames, *hidden[1:]), dtype=np.float16)
                h[mask] = states[:, j - 1]
                out[f"frame_hidden_{j}"] = h
        return out

    yield from _packed(loader, batch_size, row, torch.uint8, run, (encoder.dim + n_hidden,), finish,
                       encoder.device, stats)


def encode_audio(encoder, paths: Sequence[str | os.PathLike | None], *, batch_size: int,
                 workers: int | None = None, fbank_config=None, stats: Throughput | None = None,
                 fbank_on_device: bool | None = None) -> Iterator[ItemResult]:
    """Per clip: ``audio_tokens [n_tokens, hidden]`` and ``has_audio``. A ``None`` path is a
    video without audio: all-zero tokens and ``has_audio`` False, no model call.
    ``fbank_on_device``: workers hand over raw waves and the fbank runs on the encoder's
    device in this process (default ``extractors.device.preprocess_on_device``: on CUDA)."""
    from extractors.fbank import fbank_tensor

    workers = default_workers(encoder.device) if workers is None else workers
    config = fbank_config or encoder.config.fbank_config()
    c = encoder.config
    if (config.target_frames, config.num_mel_bins) != (c.max_length, c.num_mel_bins):
        raise ValueError(f"fbank of {config.target_frames} x {config.num_mel_bins}, the AST takes "
                         f"{c.max_length} x {c.num_mel_bins}")
    on_device = preprocess_on_device(encoder.device) if fbank_on_device is None else fbank_on_device
    stats = stats if stats is not None else Throughput()

    def run(x: torch.Tensor) -> torch.Tensor:
        return encoder.encode(x)

    def fbank(wave: torch.Tensor) -> torch.Tensor:
        return fbank_tensor(to_device(wave, encoder.device), SAMPLE_RATE, config)[None]

    row = (c.max_length, c.num_mel_bins)
    batch_size = _batch_size(encoder, batch_size, AUDIO_BATCH_CAP, f"ast {encoder.n_tokens}x{encoder.dim} "
                             f"{c.num_hidden_layers} layers", row, torch.float32, run)
    loader = _loader(FbankItems(paths, config, raw=on_device), workers)

    def finish(item: _Pending) -> dict[str, np.ndarray]:
        has = bool(item.meta)
        tokens = item.out[0] if has else np.zeros((encoder.n_tokens, encoder.dim), dtype=np.float32)
        return {"audio_tokens": tokens, "has_audio": np.bool_(has)}

    yield from _packed(loader, batch_size, row, torch.float32, run, (encoder.n_tokens, encoder.dim), finish,
                       encoder.device, stats, prepare=fbank if on_device else None)


def encode_captions(encoder, texts: Sequence[str], *, batch_size: int, progress: bool = False,
                    stats: Throughput | None = None, hidden_layers: int = 0,
                    template: str | None = None) -> Iterator[ItemResult]:
    """Per caption: ``caption_embedding [D]``, ``caption_tokens [L, D]``, ``caption_mask [L]``.
    Tokenising is cheap next to the tower: both run in the main process, in large batches.
    ``hidden_layers`` K > 0 adds ``caption_hidden_j [L, width]`` (j = 1..K); ``template``
    (``"This is a video about {}."``) adds ``caption_template_*``: the same three of the
    wrapped caption."""
    stats = stats if stats is not None else Throughput()
    starts = range(0, len(texts), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="captions", unit="batch")
    for s in starts:
        chunk = [str(t) for t in texts[s:s + batch_size]]
        out = {k: v.cpu().numpy() for k, v in encoder.encode_texts(chunk, hidden_layers).items()}
        if template is not None:
            wrapped = encoder.encode_texts([template.format(t) for t in chunk])
            out.update({k.replace("caption_", "caption_template_"): v.cpu().numpy() for k, v in wrapped.items()})
        stats.rows += len(chunk)
        for j in range(len(chunk)):
            stats.items += 1
            yield ItemResult(s + j, {k: v[j] for k, v in out.items()}, None)
    stats.stop()


# --- factory ----------------------------------------------------------------------------------
def create_encoder(name: str, config=None, **kw):
    """``create_encoder("clip", model="ViT-B-16", weights=...)`` or ``create_encoder("ast", ...)``."""
    from extractors.ast_encoder import create_ast_encoder
    from extractors.clip_encoder import create_clip_encoder

    factories = {"clip": create_clip_encoder, "ast": create_ast_encoder}
    if name not in factories:
        raise ValueError(f"unknown encoder {name!r} (known: {', '.join(factories)})")
    return factories[name](config, **kw)
