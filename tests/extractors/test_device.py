"""Device selection and the GPU-only switches, exercised (switched off) on the CPU: worker
counts, pinned buffers, the front end's placement, the batch-size search and its cache."""
from __future__ import annotations

import json
import os

import pytest
import torch

import extractors.device as device_mod
from extractors.device import (autocast, cached_batch_size, default_workers, fitting_batch_size, pin_memory,
                               preprocess_on_device, search_batch_size, select_device, to_device, use_fp16,
                               worker_count)
from extractors.engine import host_buffers

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_picks_cuda_only_when_present():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == want
    assert select_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="no CUDA device"):
        select_device("cuda")
    from typer.testing import CliRunner

    from vtr.commands.encode import app
    (tmp_path / "caps.txt").write_text("a dog runs\n")
    r = CliRunner().invoke(app, ["text", str(tmp_path / "caps.txt"), "--random-init", "--device", "cuda"])
    assert r.exit_code == 1
    assert r.output.strip() == ("error: --device cuda asked for, but torch sees no CUDA device "
                                "(use --device auto or cpu)")
    # `vtr extract` builds its encoders before touching any video: the same line, up front
    from flows.errors import ExtractError
    from flows.run import load_encoders as _load_encoders
    from flows.config import ExtractConfig
    with pytest.raises(ExtractError) as e:
        _load_encoders(ExtractConfig(random_init=True, device="cuda", steps=["probe", "frames"]))
    assert str(e.value) == "--device cuda asked for, but torch sees no CUDA device (use --device auto or cpu)"


def test_unknown_device_and_precision():
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")
    with pytest.raises(ValueError, match="unknown precision"):
        use_fp16(torch.device("cpu"), "int8")


def test_gpu_switches_are_off_on_cpu_and_the_code_path_runs():
    cpu = torch.device("cpu")
    assert not use_fp16(cpu, "fp16")
    assert use_fp16(torch.device("cuda"), "fp16") and not use_fp16(torch.device("cuda"), "fp32")
    assert pin_memory(cpu) is False and pin_memory(torch.device("cuda")) is True
    lin = torch.nn.Linear(4, 4)
    with autocast(cpu, "fp16"):
        assert not torch.is_autocast_enabled("cpu")
        y = lin(torch.randn(2, 4))
    assert y.dtype == torch.float32
    x = to_device(torch.ones(3), cpu)
    assert x.device == cpu


def test_workers_are_the_cores_less_one_per_gpu():
    assert worker_count(cores=16, gpus=1) == 15
    assert worker_count(cores=16, gpus=0) == 16
    assert worker_count(cores=8, gpus=8) == 1 and worker_count(cores=2, gpus=4) == 1  # never none
    assert worker_count(cores=1, gpus=0) == 1


def test_default_workers_read_the_affinity_mask_and_the_device(monkeypatch):
    monkeypatch.setattr(device_mod, "available_cores", lambda: 16)
    assert default_workers(CUDA) == 15 and default_workers(CPU) == 16
    monkeypatch.undo()
    assert default_workers(CPU) == len(os.sched_getaffinity(0))


def test_pinned_buffers_exactly_when_copying_to_cuda(monkeypatch):
    asked = []
    real_empty = torch.empty

    def empty(*a, pin_memory=False, **kw):
        asked.append(pin_memory)
        return real_empty(*a, **kw)  # pinning itself needs a CUDA driver

    monkeypatch.setattr(torch, "empty", empty)
    bufs = host_buffers(2, (4, 3), torch.uint8, CUDA)
    assert asked == [True, True] and [b.shape for b in bufs] == [(4, 3), (4, 3)]
    asked.clear()
    host_buffers(2, (4, 3), torch.uint8, CPU)
    assert asked == [False, False]
    monkeypatch.undo()
    x = host_buffers(1, (2,), torch.float32, CPU)[0]
    assert not x.is_pinned() and to_device(x, CPU) is x  # on the CPU: no copy at all


def test_front_end_runs_on_the_gpu_only():
    assert preprocess_on_device(CUDA) and not preprocess_on_device(CPU)


class FakeEncoder:
    """Runs out of device memory above ``limit`` rows, as a GPU would."""

    def __init__(self, limit: int):
        self.limit, self.tried = limit, []

    def __call__(self, size: int) -> None:
        self.tried.append(size)
        if size > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory trying {size} rows")


def test_batch_search_doubles_until_oom_and_backs_off():
    enc = FakeEncoder(limit=300)
    assert search_batch_size(enc, start=64, cap=4096) == 256
    assert enc.tried == [64, 128, 256, 512]
    enc = FakeEncoder(limit=20)  # the configured size itself does not fit: halve
    assert search_batch_size(enc, start=64, cap=4096) == 16
    assert enc.tried == [64, 32, 16]
    assert search_batch_size(FakeEncoder(limit=10**6), start=64, cap=1024) == 1024
    with pytest.raises(RuntimeError, match="batch size 1"):
        search_batch_size(FakeEncoder(limit=0), start=4, cap=64)


def test_batch_search_lets_other_errors_through():
    def broken(size):
        raise ValueError("bad input shape")

    with pytest.raises(ValueError, match="bad input shape"):
        search_batch_size(broken, start=8, cap=64)


def test_found_batch_size_is_cached_per_key(tmp_path):
    cache = tmp_path / "vtr" / "batch_sizes.json"
    enc = FakeEncoder(limit=100)
    assert cached_batch_size("H100|clip|224x224x3", lambda: search_batch_size(enc, 8, 1024), cache) == 64
    n = len(enc.tried)
    assert cached_batch_size("H100|clip|224x224x3", lambda: search_batch_size(enc, 8, 1024), cache) == 64
    assert len(enc.tried) == n  # the second call reads the cache: no search
    assert json.loads(cache.read_text()) == {"H100|clip|224x224x3": 64}
    assert cached_batch_size("H100|ast", lambda: 4, cache) == 4  # another key searches again
    assert json.loads(cache.read_text()) == {"H100|clip|224x224x3": 64, "H100|ast": 4}


def test_batch_search_is_skipped_on_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def never(size):
        raise AssertionError("no search on the CPU")

    assert fitting_batch_size(CPU, 48, 1024, "clip", (224, 224, 3), never) == 48
    assert not (tmp_path / "vtr").exists()
    # on CUDA the key names the GPU model, the encoder and the row shape
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    assert fitting_batch_size(CUDA, 48, 1024, "clip ViT-B-32 fp16", (224, 224, 3), FakeEncoder(500)) == 384
    assert json.loads((tmp_path / "vtr" / "batch_sizes.json").read_text()) == {
        "NVIDIA H200|clip ViT-B-32 fp16|224x224x3|cap 1024": 384}
