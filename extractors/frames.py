"""Frame sampling (the seeds' rule), decode backends and CLIP image preprocessing.

Decoding returns uint8 RGB at the native display size; resizing and CLIP normalisation are
separate steps so the float work can run batched on the GPU.
"""
from __future__ import annotations

import os
import re
import threading
from typing import Callable

import numpy as np

from extractors.errors import MediaError
from extractors.workers import Worker, WorkerError, call_in_thread, can_fork

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def sample_positions(n_frames_total: int, fps: float, n: int = 12,
                     max_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices at 1 fps (``round(sec * fps)`` while inside the video, and for
    ``sec <= max_seconds`` when given: CLIP4Clip's inclusive window, 0-31 s for DiDeMo),
    thinned with ``linspace(0, k - 1, n)`` when there are more than ``n``; padded slots hold
    index 0 and mask False."""
    if n < 1:
        raise ValueError("n must be at least 1")
    idx = np.zeros(n, dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    if n_frames_total <= 0:
        return idx, mask
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    pos = []
    sec = 0
    while True:
        i = int(np.rint(sec * fps))
        if i >= n_frames_total or (max_seconds is not None and sec > max_seconds):
            break
        pos.append(i)
        sec += 1
    pos = np.asarray(pos, dtype=np.int64)
    if len(pos) > n:
        pos = pos[np.linspace(0, len(pos) - 1, n).astype(np.int64)]
    idx[: len(pos)] = pos
    mask[: len(pos)] = True
    return idx, mask


def _rotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    # PyAV hands out stored frames (decord rotates itself); players turn them clockwise
    if rotation % 360 == 0:
        return frames
    return np.ascontiguousarray(np.rot90(frames, k=-(rotation // 90), axes=(1, 2)))


def _decode_decord(path: str, n: int, max_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    total, fps = len(vr), float(vr.get_avg_fps())
    idx, mask = sample_positions(total, fps, n, max_seconds)
    if not mask.any():
        raise RuntimeError("no decodable frames")
    got = vr.get_batch(idx[mask].tolist()).asnumpy()
    return _pack(got, mask, 0)  # decord applies the display rotation itself


def _cw_rotation(frame) -> int:
    # PyAV reports the display matrix angle (counter-clockwise); players turn clockwise
    return int(round(-float(getattr(frame, "rotation", 0) or 0))) % 360


def _decode_pyav(path: str, n: int, max_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise RuntimeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        total = int(stream.frames or 0)
        if total <= 0 and stream.duration and stream.time_base:
            total = int(round(float(stream.duration * stream.time_base) * fps))
        idx, mask = sample_positions(total, fps, n, max_seconds)
        wanted = {int(i) for i in idx[mask]}
        kept: dict[int, np.ndarray] = {}
        count, rotation = 0, 0
        last = max(wanted) if wanted else -1
        for k, frame in enumerate(container.decode(stream)):
            if k == 0:
                rotation = _cw_rotation(frame)
            count = k + 1
            if k in wanted:
                kept[k] = frame.to_ndarray(format="rgb24")
            if k >= last and total > 0:
                break
    if count == 0:
        raise RuntimeError("no decodable frames")
    if len(kept) < len(wanted) or not wanted:
        # the header's frame count was missing or too high: sample from the real count
        return _decode_pyav_counted(path, n, rotation, count, fps, max_seconds)
    got = np.stack([kept[int(i)] for i in idx[mask]])
    return _pack(got, mask, rotation)


def _decode_pyav_counted(path: str, n: int, rotation: int, total: int,
                         fps: float, max_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    import av

    idx, mask = sample_positions(total, fps, n, max_seconds)
    if not mask.any():
        raise RuntimeError("no decodable frames")
    wanted = set(int(i) for i in idx[mask])
    kept = {}
    with av.open(path) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k in wanted:
                kept[k] = frame.to_ndarray(format="rgb24")
            if len(kept) == len(wanted):
                break
    got = np.stack([kept[int(i)] for i in idx[mask]])
    return _pack(got, mask, rotation)


def _pack(got: np.ndarray, mask: np.ndarray, rotation: int) -> tuple[np.ndarray, np.ndarray]:
    got = _rotate(got, rotation)
    out = np.zeros((len(mask),) + got.shape[1:], dtype=np.uint8)
    out[mask] = got
    return out, mask


# The decoder interface: (path, n, max_seconds) -> (uint8 [n, H, W, 3] upright RGB, mask [n]), raising on
# any failure. decord is the design's choice; PyAV is the second opinion and the fallback.
BACKENDS: dict[str, Callable[[str, int, float | None], tuple[np.ndarray, np.ndarray]]] = {
    "decord": _decode_decord,
    "pyav": _decode_pyav,
}


# decord's C++ log prefix "[08:40:14] /github/workspace/src/video/video_reader.cc:486: " and
# assertion text "Check failed: st_nb >= 0 (-13 vs. 0) ", and the "[Errno N] " of PyAV
_NOISE = re.compile(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: |^\[Errno -?\d+\] |Check failed: [^()]*\([^)]*\) ")
# FFmpeg error codes decord reports by number
_AVERROR = {"1094995529": "invalid data", "541478725": "end of file"}


def _describe(backend: str, e: BaseException, path: str) -> str:
    """The decoder's own message on one line: ``"decord: <cause>"``. decord appends a C++
    stack trace and PyAV repeats the path; neither belongs in the stored cause."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = _NOISE.sub("", lines[0]).strip() if lines else ""
    msg = msg.replace(f": '{path}'", "").replace(path, "file")
    for code, name in _AVERROR.items():
        msg = msg.replace(f"failed with {code}", f"failed with {code} ({name})")
    if not msg or (type(e).__module__ == "builtins" and not isinstance(e, (RuntimeError, OSError))):
        msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return f"{backend}: {msg}"


class _Timeout(MediaError):
    """A decode that overran its bound (no fallback: the next decoder would likely hang too)."""


def _quiet_stderr() -> None:
    # decord and FFmpeg log to fd 2 from C; the cause goes back through the pipe instead
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


def _decode_call(job: tuple) -> tuple[str, object]:
    """In a decode worker: ``("ok", frames)`` or ``("err", the decoder's line)``."""
    backend, path, n, max_seconds = job
    try:
        return "ok", BACKENDS[backend](path, n, max_seconds)
    except BaseException as e:  # noqa: BLE001 - everything goes back as one line
        return "err", _describe(backend, e, path)


# A decode child is recycled after this many files (decord's memory grows over time).
MAX_FILES_PER_WORKER = 500
_local = threading.local()


def shutdown_decode_workers() -> None:
    """Stop this thread's decode child (a new one starts on the next bounded read)."""
    w = getattr(_local, "worker", None)
    if w is not None:
        w.close()
        _local.worker = None


def _run_bounded_process(backend: str, path: str, n: int, timeout_s: float, max_seconds: float | None = None):
    """The decode in this thread's long-lived decode child, killed and replaced when a
    file overruns its time bound or crashes it."""
    w = getattr(_local, "worker", None)
    if w is None or not w.usable(MAX_FILES_PER_WORKER):
        if w is not None:
            w.close()
        w = _local.worker = Worker(_decode_call, init=_quiet_stderr, what="decoder")
    try:
        _, (status, payload) = w.call((backend, path, n, max_seconds), timeout_s)
    except WorkerError as e:
        cls = _Timeout if str(e).startswith("timed out") else MediaError
        raise cls(path, f"{backend} decode {e}" if cls is _Timeout else
                  f"{backend} decoder crashed (exit code {w.proc.exitcode})") from None
    if status == "err":
        raise MediaError(path, payload)
    return payload


def _run_bounded_thread(backend: str, path: str, n: int, timeout_s: float, max_seconds: float | None = None):
    try:
        status, payload = call_in_thread(lambda: _decode_call((backend, path, n, max_seconds)), timeout_s)
    except WorkerError as e:
        raise _Timeout(path, f"{backend} decode {e}") from None
    if status == "err":
        raise MediaError(path, payload)
    return payload


# the decoder tried when the chosen one fails on a file (decord refuses some valid ones:
# extreme aspect ratios, odd strides)
FALLBACK = {"decord": "pyav"}


def _decode(backend: str, path: str, n: int, max_seconds: float | None, timeout_s: float | None):
    """One backend on ``path`` (an ffmpeg-safe path); ``MediaError`` with its cause."""
    if timeout_s is None:
        try:
            return BACKENDS[backend](path, n, max_seconds)
        except Exception as e:  # noqa: BLE001 - decord/av raise their own error types
            raise MediaError(path, _describe(backend, e, path)) from None
    runner = _run_bounded_process if can_fork() else _run_bounded_thread
    return runner(backend, path, n, timeout_s, max_seconds)


def read_frames(path: str | os.PathLike, n: int = 12, backend: str = "decord",
                timeout_s: float | None = 60.0, max_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` sampled frames (of the first ``max_seconds``, see ``sample_positions``) as uint8 ``[n, H, W, 3]`` RGB at display size (rotation
    applied; zeros in padded slots) and the mask.

    With ``timeout_s`` the decode runs in a long-lived child process (one per thread,
    ``extractors.workers``) that is killed and replaced when a file overruns; inside
    daemonic processes, which may not fork children, a thread bounds the wait instead. ``None``
    decodes in-process. When decord fails (other than by overrunning), PyAV decodes the
    file; the ``MediaError`` of a file neither can read names both causes."""
    from extractors.probe import ffmpeg_path

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (choose from {sorted(BACKENDS)})")
    p = os.fspath(path)
    # no ffprobe here: it would cost more than decoding 12 frames of a compressed clip
    if not os.path.isfile(p):
        raise MediaError(p, "no such file")
    if os.path.getsize(p) == 0:
        raise MediaError(p, "empty file (0 bytes)")
    src = ffmpeg_path(p)
    try:
        return _decode(backend, src, n, max_seconds, timeout_s)
    except _Timeout as e:
        raise MediaError(p, e.cause) from None
    except MediaError as e:
        if backend not in FALLBACK:
            raise MediaError(p, e.cause) from None
        first = e.cause
    try:
        return _decode(FALLBACK[backend], src, n, max_seconds, timeout_s)
    except MediaError as e:
        raise MediaError(p, f"{first}; {e.cause}") from None


def resize_center_crop(frames: np.ndarray, size: int = 224) -> np.ndarray:
    """Short side to ``size`` (PIL bicubic, as CLIP's own transform), then the centre
    ``size`` x ``size`` crop; the same arithmetic as torchvision's Resize + CenterCrop."""
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected [k, H, W, 3] frames, got shape {frames.shape}")
    k, h, w, _ = frames.shape
    out = np.zeros((k, size, size, 3), dtype=np.uint8)
    if k == 0 or h == 0 or w == 0:
        return out
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nh, nw = size, int(size * w / h)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    for i in range(k):
        img = Image.fromarray(np.ascontiguousarray(frames[i], dtype=np.uint8))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BICUBIC)
        out[i] = np.asarray(img)[top: top + size, left: left + size]
    return out


def load_clip_frames(path: str | os.PathLike, n: int = 12, size: int = 224, backend: str = "decord",
                     timeout_s: float | None = 60.0, max_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``read_frames`` + ``resize_center_crop``: uint8 ``[n, size, size, 3]`` and the mask
    (padded slots stay zero)."""
    frames, mask = read_frames(path, n=n, backend=backend, timeout_s=timeout_s, max_seconds=max_seconds)
    out = np.zeros((n, size, size, 3), dtype=np.uint8)
    out[mask] = resize_center_crop(frames[mask], size)
    return out, mask


def normalize_for_clip(x):
    """uint8 ``[..., S, S, 3]`` (any device) -> float32 ``[..., 3, S, S]``, scaled to [0, 1]
    and normalised with CLIP's mean/std on the tensor's own device."""
    import torch

    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames, got {x.dtype}")
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=torch.float32).view(3, 1, 1)
    y = x.movedim(-1, -3).to(torch.float32).div_(255.0)
    return (y - mean) / std
