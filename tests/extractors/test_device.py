"""Device selection and the GPU-only switches, exercised (switched off) on the CPU."""
from __future__ import annotations

import pytest
import torch

from extractors.device import autocast, default_workers, pin_memory, select_device, to_device, use_fp16


def test_auto_picks_cuda_only_when_present():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == want
    assert select_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        select_device("cuda")


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


def test_default_workers_is_small():
    assert 1 <= default_workers() <= 2
