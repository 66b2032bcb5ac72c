"""benchmarks/gpu_check.sh --cpu-smoke: the GPU check's code, on tiny sizes on the CPU, as the
lent GPU machine runs it: no ffmpeg binary on the PATH, Prefect never imported. (The wheels
the image lacks and a venv holding only the image's packages: scripts/rehearse_gpu_check.sh,
which needs the registry.)"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "benchmarks" / "gpu_wheels.txt"


def gpu_check(*args: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("bash"), str(REPO / "benchmarks" / "gpu_check.sh"), *args],
                          capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable, **env},
                          timeout=timeout)


def test_gpu_check_cpu_smoke_without_ffmpeg_or_prefect(tmp_path):
    """Exits 0 and prints the device, each phase's seconds and the four figures, with a PATH
    that holds no ffmpeg or ffprobe (the wrapper's `dirname` only)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    r = gpu_check("--cpu-smoke", "--workdir", str(tmp_path / "work"), timeout=300, PATH=str(bin_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("device: cpu (")
    assert lines[1] == "ffmpeg binary on the PATH: no"
    phases = [ln.split(":")[0] for ln in lines if ln.startswith("phase ")]
    assert phases == ["phase clips", "phase extract", "phase encoders alone", "phase training", "phase finetune"]
    assert re.search(r"^  frames step: [\d.]+ s \(4 done, 0 failed\)$", r.stdout, re.M)
    assert re.search(r"^  audio step: [\d.]+ s \(4 done, 0 failed\)$", r.stdout, re.M)
    figures = {ln[:3]: ln for ln in lines if ln[:3] in ("(a)", "(b)", "(c)", "(d)")}
    assert list(figures) == ["(a)", "(b)", "(c)", "(d)"], r.stdout
    assert "CLIP ViT-B/32 frames/s: pipeline" in figures["(a)"] and "(aim >= 0.8)" in figures["(a)"]
    assert "AST (tiny) clips/s: pipeline" in figures["(b)"] and "(audio step, 4 clips)" in figures["(b)"]
    assert "AVIGATE epoch over 180,000 pairs:" in figures["(c)"] and "over 108 pairs" in figures["(c)"]
    assert figures["(d)"].startswith("(d) GPU memory peak: n/a (cpu); peak RSS")
    assert "prefect imported: no" in lines and lines[-1].startswith("total ")
    # the figures are numbers, not placeholders
    ratio = float(figures["(a)"].split(" = ")[1].split()[0])
    assert ratio > 0 and (tmp_path / "work" / "run" / "metrics.csv").exists()


def test_gpu_check_device_cuda_without_a_gpu_is_one_line(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = gpu_check("--device", "cuda", "--workdir", str(tmp_path), timeout=120)
    assert r.returncode == 1 and r.stderr.strip() == "error: --device cuda asked for, but torch sees no CUDA device"
    assert not (tmp_path / "data").exists()  # refused before generating anything


def _pins() -> dict[str, str]:
    pins = {}
    for line in WHEELS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and name not in pins, f"{line}: want one NAME==VERSION per package"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_gpu_wheels_carry_only_what_the_image_lacks():
    """One exact pin per package; none the image already has (typing-extensions aside: a
    newer one than the image's may be needed), no Prefect, PyAV or ffmpeg-python; and the
    project's own pins where pyproject.toml has them."""
    image = {n.lower().replace("_", "-") for line in WHEELS.read_text().splitlines()
             if line.startswith("# image:") for n in line.removeprefix("# image:").split()}
    assert {"torch", "numpy", "transformers", "opencv-python-headless", "xarray"} <= image
    pins = _pins()
    assert not (set(pins) - {"typing-extensions"}) & image
    assert not {"prefect", "av", "ffmpeg-python"} & set(pins)
    assert {"open-clip-torch", "zarr", "numcodecs", "pydantic", "decord", "dask"} <= set(pins)
    project = dict(re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^"]+)"', (REPO / "pyproject.toml").read_text()))
    for name, version in project.items():
        if name.lower().replace("_", "-") in pins:
            assert pins[name.lower().replace("_", "-")] == version, name
