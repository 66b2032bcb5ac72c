"""The deployment way: a real Prefect server on loopback, a serve process, and
`prefect deployment run` as a user types it; then `vtr extract` on a Dask LocalCluster."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from storage import DONE, FAILED, check_store, open_store

from .conftest import TINY, stop, vtr_cmd, vtr_env

pytestmark = pytest.mark.slow


def _prefect(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_serve_and_run_deployment(prefect_server, tiny_data, tmp_path):
    env = vtr_env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "home"))
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([sys.executable, "-m", "flows.serve", "--name", "test"], env=env, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            r = _prefect(["deployment", "ls"], env, timeout=60)
            if "extract-msrvtt/test" in r.stdout.replace(" ", ""):
                break
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, "deployment never registered"
            time.sleep(1)
        store = tmp_path / "dep.zarr"
        r = _prefect(["deployment", "run", "extract-msrvtt/test",
                      "--param", f"data_root={tiny_data}", "--param", f"store={store}",
                      "--param", 'config={"random_init": true, "ast_size": "tiny", "crawl_retries": 0, '
                      '"workers": 1, "tag_min_count": 2}', "--watch"], env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        ds = open_store(store)
        ids = list(ds.video.values)
        assert ds.frames_state.values[ids.index("video2")] == FAILED
        assert (ds.text_state.values == DONE).all()
        assert check_store(store) == []
        # a parameter of the wrong type is refused when the run is created, with its name
        r = _prefect(["deployment", "run", "extract-msrvtt/test", "--param", f"data_root={tiny_data}",
                      "--param", f"store={tmp_path / 'x.zarr'}", "--param", 'config={"workers": "many"}'],
                     env, timeout=60)
        assert r.returncode != 0 and "workers" in (r.stdout + r.stderr)
        assert not (tmp_path / "x.zarr").exists()
    finally:
        stop(serve)
        log.close()


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
