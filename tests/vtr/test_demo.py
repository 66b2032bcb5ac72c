"""The README's main job, end to end on a smaller sample (same code path as `make demo`)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_demo_prints_two_acts_and_next_steps(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PREFECT_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "vtr.cli", "demo", "--out", str(tmp_path / "demo"), "--n-videos", "8",
           "--ast-size", "tiny", "--epochs", "1", "--planted-videos", "80"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    act1, rest = out.split("== Act 2:")
    act2, steps = rest.split("== Next steps ==")
    assert act1.startswith("== Act 1: the pipeline on a generated sample (a smoke check")
    assert "videos    8  (train" in act1  # the store summary
    assert "here their differences are meaningful" in act2
    for table in (act1, act2):
        assert "| variant | t2v R@1 |" in table
        for v in ("meanpool", "avigate", "waver/none", "waver/injection", "waver/kd", "avigate+waver/kd"):
            assert f"| {v} |" in table, v
        assert "| n/a |" not in table.split("Test split")[0]  # style captions feed the style gap
    assert "random-init encoders: these numbers are meaningless" in act1 and "--clip-weights" in act1
    assert "Test split, 10 videos" in act2  # the planted store's test split (80 videos)
    demo = (tmp_path / "demo").resolve()
    store, smoke = demo / "msrvtt.zarr", demo / "ablate" / "runs" / "avigate"
    # next steps: one search and its top 3, the best run's report, the notebook command
    assert f"/vtr search --store {store} --run {smoke} " in steps and " -k 3\n" in steps
    top = steps.split(" -k 3\n")[1].splitlines()
    assert top[0].split() == ["rank", "score", "id", "split", "path"]
    assert [ln.split()[0] for ln in top[1:4]] == ["1", "2", "3"] and not top[4].strip()[:1].isdigit()
    report = re.search(r"  wrote (\S+report\.html)", steps).group(1)
    assert os.path.isabs(report) and report.startswith(str(demo / "planted-ablate" / "runs"))
    assert "<h2>Test metrics</h2>" in Path(report).read_text(encoding="utf-8")
    notebook = re.search(r"  VTR_STORE=(\S+) VTR_RUN=(\S+) (\S+) lab (\S+)$", steps, re.M)
    assert notebook.group(1) == str(store) and notebook.group(2) == str(smoke)
    assert os.path.isfile(notebook.group(3)) and notebook.group(4) == str(ROOT / "notebooks" / "inspect_store.ipynb")
    # the silent videos' audio was crawled from the demo's loopback server
    from storage import open_store
    ds = open_store(str(tmp_path / "demo" / "msrvtt.zarr"))
    src = set(ds.audio_source.values.tolist())
    assert src == {"original", "crawled"} and ds.has_audio.values.all(), src
    assert "served at http://127.0.0.1:" in out
    tables = [(tmp_path / "demo" / d / "ablation.md").read_text() for d in ("ablate", "planted-ablate")]
    assert all(t.startswith("| variant |") for t in tables)
    # a second run resumes: nothing is recomputed, the same tables come back
    done = [tmp_path / "demo" / d / "runs" / "waver-kd" / "test_metrics.json" for d in ("ablate", "planted-ablate")]
    stamps = [d.stat().st_mtime_ns for d in done]
    r2 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert r2.returncode == 0 and all(t.strip() in r2.stdout for t in tables)
    assert [d.stat().st_mtime_ns for d in done] == stamps
