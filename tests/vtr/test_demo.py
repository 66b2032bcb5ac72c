"""The README's main job, end to end on a smaller sample (same code path as `make demo`)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_demo_prints_the_comparison_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PREFECT_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "vtr.cli", "demo", "--out", str(tmp_path / "demo"), "--n-videos", "8",
           "--ast-size", "tiny", "--epochs", "1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "| variant | t2v R@1 |" in out
    for v in ("meanpool", "avigate", "waver/none", "waver/injection", "waver/kd", "avigate+waver/kd"):
        assert f"| {v} |" in out, v
    assert "| n/a |" not in out.split("Test split")[0]  # the flow's style step feeds the style gap
    assert "random-init encoders: these numbers are meaningless" in out and "--clip-weights" in out
    # the silent videos' audio was crawled from the demo's loopback server
    from storage import open_store
    ds = open_store(str(tmp_path / "demo" / "msrvtt.zarr"))
    src = set(ds.audio_source.values.tolist())
    assert src == {"original", "crawled"} and ds.has_audio.values.all(), src
    assert "served at http://127.0.0.1:" in out
    table = (tmp_path / "demo" / "ablate" / "ablation.md").read_text()
    assert table.startswith("| variant |")
    # a second run resumes: nothing is recomputed, the same table comes back
    done = tmp_path / "demo" / "ablate" / "runs" / "waver-kd" / "test_metrics.json"
    stamp = done.stat().st_mtime_ns
    r2 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0 and table.strip() in r2.stdout
    assert done.stat().st_mtime_ns == stamp
