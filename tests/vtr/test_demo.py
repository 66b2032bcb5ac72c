"""The README's main job, end to end on a smaller sample (same code path as `make demo`)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_demo_prints_the_comparison_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "vtr.cli", "demo", "--out", str(tmp_path / "demo"), "--n-videos", "8",
           "--ast-size", "tiny", "--epochs", "1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "| head | t2v R@1 |" in out and "| meanpool |" in out and "| avigate |" in out
    assert "random-init encoders: these numbers are meaningless" in out and "--clip-weights" in out
    assert (tmp_path / "demo" / "comparison.md").read_text().startswith("| head |")
    # a second run resumes: nothing is recomputed, the same table comes back
    r2 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0 and (tmp_path / "demo" / "comparison.md").read_text() in r2.stdout
