"""Where the frozen encoders run: device choice, fp16 autocast, pinned memory, workers.

Every GPU-only switch is a plain ``enabled=`` flag computed here, so the same code path
runs (switched off) on a CPU-only machine and is exercised by the CPU tests.
"""
from __future__ import annotations

import contextlib
import os

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp16", "fp32")


def select_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; asking for CUDA without one fails."""
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA device "
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


def default_workers() -> int:
    """Decode workers: two at most, since the model needs the remaining cores."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, n))


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy without blocking when the source is pinned (the copy overlaps compute)."""
    return x.to(device, non_blocking=x.is_pinned() if device.type == "cuda" else False)
