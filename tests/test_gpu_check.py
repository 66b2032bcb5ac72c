"""benchmarks/gpu_check.sh --cpu-smoke: the GPU check's code, on tiny sizes on the CPU."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def gpu_check(*args: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("bash"), str(REPO / "benchmarks" / "gpu_check.sh"), *args],
                          capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable, **env},
                          timeout=timeout)


def test_gpu_check_cpu_smoke(prefect_api, tmp_path):
    """Exits 0 and prints the device and the four figures. ``prefect_api``: the session's
    Prefect server, so `vtr extract` inside does not start its own."""
    r = gpu_check("--cpu-smoke", "--workdir", str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("device: cpu (")
    figures = {ln[:3]: ln for ln in lines if ln[:3] in ("(a)", "(b)", "(c)", "(d)")}
    assert list(figures) == ["(a)", "(b)", "(c)", "(d)"], r.stdout
    assert "CLIP ViT-B/32 frames/s: pipeline" in figures["(a)"] and "(aim >= 0.8)" in figures["(a)"]
    assert "AST (tiny) clips/s: pipeline" in figures["(b)"] and "encoder alone" in figures["(b)"]
    assert "AVIGATE epoch over 180,000 pairs:" in figures["(c)"] and "over 108 pairs" in figures["(c)"]
    assert figures["(d)"].startswith("(d) GPU memory peak: n/a (cpu); peak RSS")
    # the figures are numbers, not placeholders
    ratio = float(figures["(a)"].split(" = ")[1].split()[0])
    assert ratio > 0 and (tmp_path / "run" / "metrics.csv").exists()


def test_gpu_check_device_cuda_without_a_gpu_is_one_line(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = gpu_check("--device", "cuda", "--workdir", str(tmp_path), timeout=120)
    assert r.returncode == 1 and r.stderr.strip() == "error: --device cuda asked for, but torch sees no CUDA device"
    assert not (tmp_path / "data").exists()  # refused before generating anything


def test_gpu_check_without_ffmpeg_is_one_line(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with the tools the wrapper needs, but no ffmpeg or ffprobe
    bin_dir.mkdir()
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    r = gpu_check("--cpu-smoke", timeout=60, PATH=str(bin_dir))
    assert r.returncode == 1
    assert r.stderr.strip() == "error: ffmpeg/ffprobe not found on the PATH (they make and probe the input clips)"
