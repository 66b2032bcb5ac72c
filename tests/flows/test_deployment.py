"""`vtr extract` on a Dask LocalCluster it starts itself. The deployment ways: a serve process
on a running cluster in test_dask_cluster.py, a process worker in test_work_pool.py."""
import json
import subprocess

import numpy as np
import pytest

from storage import DONE, open_store

from .conftest import TINY, vtr_cmd, vtr_env

pytestmark = pytest.mark.slow


def test_dask_local_cluster_two_workers(tiny_data, tmp_path):
    """The direct run (no PREFECT_API_URL) with a Dask ``Client`` as the core's executor."""
    env = vtr_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL", None)
    store = tmp_path / "dask.zarr"
    r = subprocess.run(vtr_cmd("extract", "--data-root", tiny_data, "--store", store, *TINY,
                               "--video-chunk", "2", "--steps", "probe,crawl,frames,text",
                               "--dask", "local:2"),
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout[r.stdout.index("{"):])
    assert result["steps"]["frames"]["done"] == 5 and result["steps"]["frames"]["failed"] == 1
    # three blocks, two idle worker processes: both ran some (the summary names each block's worker)
    workers = result["steps"]["frames"]["workers"]
    assert len(workers) == 2 and sum(workers.values()) == 3 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
    ds = open_store(store)
    assert ds.frame_features.encoding["chunks"][0] == 2  # one task per 2-video chunk
    assert (ds.text_state.values == DONE).all()
    assert np.isfinite(ds.frame_features.values.astype(np.float32)).all()
