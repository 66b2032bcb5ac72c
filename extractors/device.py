"""Where the frozen encoders run: device choice, fp16 autocast, pinned memory, workers,
front ends on the device, and the largest batch that fits (searched once, then cached).

Every GPU-only switch is a plain flag computed here, so the same code path runs (switched
off) on a CPU-only machine and is exercised by the CPU tests.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from extractors.workers import available_cores, worker_count  # noqa: F401 - the one rule, re-exported

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp16", "fp32")


def select_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU. Asking for CUDA without one is a
    ``ValueError`` (an argument this machine cannot take: the commands print it as one line)."""
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} asked for, but torch sees no CUDA device "
                             "(use --device auto or cpu)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r} (one of {', '.join(DEVICES)}, or cuda:N)")


def use_fp16(device: torch.device, precision: str) -> bool:
    """fp16 autocast only on CUDA: CPU fp16 matmuls are slow and less exact."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    return device.type == "cuda" and precision == "fp16"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the device; a no-op (``enabled=False``) off CUDA."""
    enabled = use_fp16(device, precision)
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled)


def pin_memory(device: torch.device) -> bool:
    """Pinned host buffers only help host-to-GPU copies."""
    return device.type == "cuda"


def default_workers(device: torch.device) -> int:
    """``worker_count`` for this process: it drives one GPU on CUDA, none on the CPU."""
    return worker_count(available_cores(), 1 if device.type == "cuda" else 0)


def preprocess_on_device(device: torch.device) -> bool:
    """Run the fbank front end on the encoder's device (main process) instead of in the
    decode workers. On the CPU it stays in the workers: there it costs ~0.1 s per 10 s clip
    (2 loaded cores), time the main process would take from the AST (0.6-2 s per clip)."""
    return device.type == "cuda"


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy without blocking when the source is pinned (the copy overlaps compute)."""
    return x.to(device, non_blocking=x.is_pinned() if device.type == "cuda" else False)


# --- the largest batch that fits --------------------------------------------------------------
def search_batch_size(trial: Callable[[int], object], start: int, cap: int) -> int:
    """The largest of ``start * 2**k`` (at most ``cap``) for which ``trial(size)`` does not run
    out of device memory: doubles from ``start`` until an OOM or the cap, and when ``start``
    itself does not fit, halves until a size does. Other errors propagate."""
    if start < 1:
        raise ValueError("batch size must be at least 1")

    def fits(size: int) -> bool:
        try:
            trial(size)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the failed try's blocks, before the next size
            return False
        return True

    size = min(start, cap)
    if not fits(size):
        while size > 1:
            size //= 2
            if fits(size):
                return size
        raise RuntimeError("out of device memory at batch size 1")
    while size * 2 <= cap and fits(size * 2):
        size *= 2
    return size


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vtr`` (default ``~/.cache/vtr``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vtr"


def cached_batch_size(key: str, search: Callable[[], int], path: Path | None = None) -> int:
    """``search()``'s answer for ``key``, run once and kept in a JSON file for later runs."""
    path = path or cache_dir() / "batch_sizes.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), int):
        return known[key]
    size = search()
    known[key] = size
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    os.replace(tmp, path)  # concurrent runs: the last writer wins, every answer is valid
    return size


def fitting_batch_size(device: torch.device, configured: int, cap: int, model: str,
                       row_shape: tuple[int, ...], trial: Callable[[int], object]) -> int:
    """The batch size to run at: ``configured`` off CUDA; on CUDA the largest that fits (up
    to ``cap``), searched from ``configured`` once per GPU model, encoder and row shape."""
    if device.type != "cuda":
        return configured
    key = f"{torch.cuda.get_device_name(device)}|{model}|{'x'.join(map(str, row_shape))}|cap {cap}"
    return cached_batch_size(key, lambda: search_batch_size(trial, configured, cap))
