"""Two `vtr extract` runs started together (no PREFECT_API_URL: the direct run, no server
and no port between them) both complete."""
import subprocess

import pytest

from storage import check_store

from .conftest import TINY, vtr_cmd, vtr_env

pytestmark = pytest.mark.slow
STEPS = ["--steps", "probe,crawl,compress,frames,text"]


def test_two_runs_started_together_both_complete(tiny_data, tmp_path):
    env = vtr_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL", None)
    stores = [tmp_path / "a.zarr", tmp_path / "b.zarr"]
    procs = [subprocess.Popen(vtr_cmd("extract", "--data-root", tiny_data, "--store", s, *TINY, *STEPS),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in stores]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
        assert "Traceback" not in err
    for s in stores:
        assert check_store(str(s)) == []
