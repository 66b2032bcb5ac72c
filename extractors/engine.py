"""Batched, pipelined inference of the frozen encoders.

Decoding runs in DataLoader worker processes (one video or clip per item, in order) while
the main process runs the model; rows from many items are packed into fixed-size batches
(a video's 12 frames may straddle two batches) and results come back per item, in input
order, whatever the batch boundaries. An item whose decode fails yields its error and no
features; the others carry on.

On CUDA: pinned host buffers with non-blocking copies, fp16 autocast, channels-last input.
On the CPU the same code runs with those switched off.
"""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from extractors.device import default_workers, pin_memory
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
    (no audio), has_audio, error)."""

    def __init__(self, paths: Sequence[str | os.PathLike | None], fbank_config):
        self.paths, self.config = list(paths), fbank_config

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from extractors.fbank import load_fbank

        p = self.paths[i]
        if p is None:
            c = self.config
            return i, torch.zeros((0, c.target_frames, c.num_mel_bins)), torch.tensor(False), None
        try:
            fb = load_fbank(p, self.config)
        except Exception as e:  # noqa: BLE001
            return i, None, None, _error_text(p, e)
        return i, torch.from_numpy(np.ascontiguousarray(fb))[None], torch.tensor(True), None


def _loader(dataset: torch.utils.data.Dataset, workers: int, pin: bool) -> Iterable:
    # batch_size=None: items pass through one by one (packing happens in the main process,
    # across items); in-order delivery keeps the output deterministic
    kw = {"prefetch_factor": 4, "persistent_workers": False} if workers > 0 else {}
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                       pin_memory=pin, **kw)


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
            run: Callable[[torch.Tensor], np.ndarray], out_shape: tuple[int, ...],
            finish: Callable[[_Pending], dict[str, np.ndarray]], pin: bool,
            stats: Throughput) -> Iterator[ItemResult]:
    """Pack the rows of consecutive items into batches of ``batch_size`` and run ``run`` on
    each; yield every item, in order, as soon as all its rows are computed."""
    buf = torch.empty((batch_size, *row_shape), dtype=row_dtype, pin_memory=pin)
    staged: deque[tuple[_Pending, int, torch.Tensor]] = deque()  # (item, first row, rows)
    n_staged = 0
    waiting: deque[_Pending] = deque()

    def flush(n: int) -> None:
        nonlocal n_staged
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
        feats = run(buf[:n])
        o = 0
        for item, first, take in parts:
            item.out[first:first + take] = feats[o:o + take]
            item.got += take
            o += take
        stats.rows += n

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
                staged.append((item, 0, rows))
                n_staged += item.need
        waiting.append(item)
        while n_staged >= batch_size:
            flush(batch_size)
        yield from ready()
    if n_staged:
        flush(n_staged)
    yield from ready()
    stats.stop()


# --- encoders ---------------------------------------------------------------------------------
def encode_frames(encoder, paths: Sequence[str | os.PathLike], *, batch_size: int, timeout_s: float | None,
                  workers: int | None = None, n_frames: int = StoreLayout.n_frames, backend: str = "decord", stats: Throughput | None = None,
                  max_seconds: float | None = None) -> Iterator[ItemResult]:
    """Per video: ``frame_features [n_frames, D]`` (zero in padded slots) and ``frame_mask``;
    frames from the first ``max_seconds`` only when given."""
    from extractors.frames import normalize_for_clip

    workers = default_workers() if workers is None else workers
    pin = pin_memory(encoder.device)
    size = encoder.image_size
    stats = stats if stats is not None else Throughput()
    loader = _loader(FrameItems(paths, n_frames, size, backend, timeout_s, max_seconds), workers, pin)

    def run(x: torch.Tensor) -> np.ndarray:
        x = x.to(encoder.device, non_blocking=pin)
        return encoder.encode_images(normalize_for_clip(x)).cpu().numpy()

    def finish(item: _Pending) -> dict[str, np.ndarray]:
        mask = item.meta.numpy()
        feats = np.zeros((n_frames, encoder.dim), dtype=np.float32)
        feats[mask] = item.out
        return {"frame_features": feats, "frame_mask": mask}

    yield from _packed(loader, batch_size, (size, size, 3), torch.uint8, run, (encoder.dim,), finish, pin, stats)


def encode_audio(encoder, paths: Sequence[str | os.PathLike | None], *, batch_size: int,
                 workers: int | None = None, fbank_config=None, stats: Throughput | None = None
                 ) -> Iterator[ItemResult]:
    """Per clip: ``audio_tokens [n_tokens, hidden]`` and ``has_audio``. A ``None`` path is a
    video without audio: all-zero tokens and ``has_audio`` False, no model call."""
    workers = default_workers() if workers is None else workers
    config = fbank_config or encoder.config.fbank_config()
    c = encoder.config
    if (config.target_frames, config.num_mel_bins) != (c.max_length, c.num_mel_bins):
        raise ValueError(f"fbank of {config.target_frames} x {config.num_mel_bins}, the AST takes "
                         f"{c.max_length} x {c.num_mel_bins}")
    pin = pin_memory(encoder.device)
    stats = stats if stats is not None else Throughput()
    loader = _loader(FbankItems(paths, config), workers, pin)

    def run(x: torch.Tensor) -> np.ndarray:
        return encoder.encode(x).cpu().numpy()

    def finish(item: _Pending) -> dict[str, np.ndarray]:
        has = bool(item.meta)
        tokens = item.out[0] if has else np.zeros((encoder.n_tokens, encoder.dim), dtype=np.float32)
        return {"audio_tokens": tokens, "has_audio": np.bool_(has)}

    yield from _packed(loader, batch_size, (c.max_length, c.num_mel_bins), torch.float32, run,
                       (encoder.n_tokens, encoder.dim), finish, pin, stats)


def encode_captions(encoder, texts: Sequence[str], *, batch_size: int, progress: bool = False,
                    stats: Throughput | None = None) -> Iterator[ItemResult]:
    """Per caption: ``caption_embedding [D]``, ``caption_tokens [L, D]``, ``caption_mask [L]``.
    Tokenising is cheap next to the tower: both run in the main process, in large batches."""
    stats = stats if stats is not None else Throughput()
    starts = range(0, len(texts), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="captions", unit="batch")
    for s in starts:
        chunk = [str(t) for t in texts[s:s + batch_size]]
        out = {k: v.cpu().numpy() for k, v in encoder.encode_texts(chunk).items()}
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
