"""The extraction on a real Dask cluster: a scheduler and workers started here as separate
processes on 127.0.0.1. A deployment run with ``dask_address`` uses both workers; with
``--gpu-per-worker`` no two model tasks overlap on a worker; a worker SIGKILLed midway
loses nothing; an address nobody answers stops the run in one line before any media."""
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest

from flows.config import ExtractConfig
from storage import DONE, FAILED, check_store, open_store

from .conftest import TINY, free_port, stop, vtr_cmd, vtr_env

pytestmark = pytest.mark.slow

STEPS = "probe,crawl,frames,text"
MODEL_STEPS = ("frames", "audio", "text", "tags", "style")


@contextmanager
def dask_cluster(tmp_path, env: dict, n_workers: int = 2, nthreads: int = 1, resources: str | None = None):
    """``(address, workers)``: a scheduler and ``n_workers`` worker processes (no nanny, so
    a killed worker stays dead), stopped at the end."""
    from distributed import Client

    env = {**env, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    address = f"tcp://127.0.0.1:{free_port()}"
    logs, procs = [], []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        logs.append(open(tmp_path / f"{name}.log", "w"))
        procs.append(subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=logs[-1],
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        return procs[-1]

    try:
        start("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                            address.rsplit(":", 1)[1], "--no-dashboard"])
        workers = [start(f"worker{i}", ["distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                                        "--nthreads", str(nthreads), "--no-nanny", "--no-dashboard",
                                        *(["--resources", resources] if resources else [])])
                   for i in range(n_workers)]
        with Client(address, timeout="60s") as c:
            c.wait_for_workers(n_workers, timeout=120)
        yield address, workers
    finally:
        for p in reversed(procs):
            stop(p)
        for f in logs:
            f.close()


def task_stream(address: str) -> list[dict]:
    """The scheduler's record of every task it saw finish: key, worker, compute start/stop."""
    from distributed import Client

    with Client(address, timeout="30s") as c:
        return c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.get_task_stream())


def start_task_stream(address: str) -> None:
    """The scheduler records tasks from the first ask on."""
    task_stream(address)


def compute_spans(stream: list[dict]) -> list[tuple[str, str, float, float]]:
    return [(r["key"], r["worker"], s["start"], s["stop"]) for r in stream
            for s in r["startstops"] if s["action"] == "compute"]


def _prefect(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def gpu_cluster(prefect_server, tmp_path_factory):
    """``(address, env)``: two workers of two threads and one GPU each (``--resources GPU=1``),
    shared by the tests that kill no worker; each reads the task stream from its own start."""
    tmp = tmp_path_factory.mktemp("cluster")
    env = vtr_env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp / "home"))
    with dask_cluster(tmp, env, nthreads=2, resources="GPU=1") as (address, _):
        start_task_stream(address)
        yield address, env


def spans_since(address: str, t0: float) -> list[tuple[str, str, float, float]]:
    return [s for s in compute_spans(task_stream(address)) if s[2] >= t0]


def test_serve_and_run_a_deployment_on_the_cluster(gpu_cluster, tiny_data, tmp_path):
    """A serve process, `prefect deployment run` as a user types it, every step of the run on
    the cluster; the deployment's config asks for a GPU per model task. The plain deployment
    (no cluster) runs on a process worker in test_work_pool.py."""
    address, env = gpu_cluster
    t0 = time.time()
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([sys.executable, "-m", "flows.serve", "--name", "dask"], env=env, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while "extract-msrvtt/dask" not in _prefect(["deployment", "ls"], env, 60).stdout.replace(" ", ""):
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, "deployment never registered"
            time.sleep(1)
        store = tmp_path / "dep.zarr"
        r = _prefect(["deployment", "run", "extract-msrvtt/dask", "--param", f"data_root={tiny_data}",
                      "--param", f"store={store}", "--param", f"dask_address={address}",
                      "--param", 'config={"random_init": true, "ast_size": "tiny", "crawl_retries": 0, '
                      '"workers": 1, "video_chunk": 3, "tag_min_count": 2, "gpu_per_worker": true}',
                      "--watch"], env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + (tmp_path / "serve.log").read_text()[-3000:]
        # a parameter of the wrong type is refused when the run is created, with its name
        r = _prefect(["deployment", "run", "extract-msrvtt/dask", "--param", f"data_root={tiny_data}",
                      "--param", f"store={tmp_path / 'x.zarr'}", "--param", 'config={"workers": "many"}'],
                     env, timeout=60)
        assert r.returncode != 0 and "workers" in (r.stdout + r.stderr)
        assert not (tmp_path / "x.zarr").exists()
    finally:
        stop(serve)
        log.close()
    spans = spans_since(address, t0)
    # every step's blocks went to the cluster (three videos per block)
    ran = {}
    for key, worker, *_ in spans:
        ran.setdefault(key.split("_block")[0], set()).add(worker)
    assert {"probe", "crawl", "compress", *MODEL_STEPS} <= set(ran), ran
    assert len(ran["frames"]) == 2, ran  # two blocks, two idle workers: one each
    model = [s for s in spans if s[0].split("_block")[0] in MODEL_STEPS]
    assert overlaps(model) == [], sorted(model, key=lambda s: (s[1], s[2]))
    ds = open_store(store)
    assert ds.frames_state.values[list(ds.video.values).index("video2")] == FAILED
    assert all((ds[f"{step}_state"].values == DONE).sum() == 5 for step in ("frames", "audio", "tags"))
    assert (ds.text_state.values == DONE).all() and (ds.style_state.values == DONE).all()
    assert check_store(store) == []


def overlaps(spans: list[tuple[str, str, float, float]], tol_s: float = 0.05) -> list[tuple[str, str]]:
    """Pairs of spans that ran at the same time on one worker. The scheduler shifts each
    worker's times by its measured clock delay, so back-to-back tasks may seem to share a
    few milliseconds (seen: up to 4 ms): ``tol_s`` of overlap does not count."""
    out = []
    for i, (k1, w1, s1, e1) in enumerate(spans):
        for k2, w2, s2, e2 in spans[i + 1:]:
            if w1 == w2 and s1 < e2 - tol_s and s2 < e1 - tol_s:
                out.append((k1, k2))
    return out


def test_gpu_per_worker_one_model_task_at_a_time(gpu_cluster, tiny_data, tmp_path):
    # two threads per worker, one GPU: media tasks may share a worker, model tasks may not
    address, env = gpu_cluster
    t0 = time.time()
    store = tmp_path / "gpu.zarr"
    r = subprocess.run(vtr_cmd("extract", "--data-root", tiny_data, "--store", store, *TINY,
                               "--video-chunk", "1", "--steps", STEPS, "--dask", address, "--gpu-per-worker"),
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    spans = spans_since(address, t0)
    result = json.loads(r.stdout[r.stdout.index("{"):])
    assert result["steps"]["frames"]["done"] == 5 and sum(result["steps"]["frames"]["workers"].values()) == 6
    model = [s for s in spans if s[0].split("_block")[0] in MODEL_STEPS]
    assert len(model) >= 7  # six frames blocks and the text block
    assert overlaps(model) == [], sorted(model, key=lambda s: (s[1], s[2]))
    # the workers do run two tasks at once: without the GPU resource, model tasks could overlap
    media = [s for s in spans if s[0].split("_block")[0] in ("probe", "crawl")]
    assert overlaps(media), media


def test_unreachable_scheduler_one_line_before_any_media(prefect_server, tiny_data, tmp_path, monkeypatch):
    import flows.cluster
    from flows.errors import ExtractError
    from flows.extract import extract_msrvtt

    env = vtr_env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "home"))
    store = tmp_path / "x.zarr"
    r = subprocess.run(vtr_cmd("extract", "--data-root", tiny_data, "--store", store, *TINY,
                               "--dask", "tcp://127.0.0.1:1"), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: tcp://127.0.0.1:1: no Dask scheduler answers ("), r.stderr
    assert not store.exists() and not (tmp_path / "x.zarr.media").exists()
    # the deployment's way: the flow itself raises it (sooner here: the refusal, not the wait,
    # is what this shows); a malformed local cluster size too
    monkeypatch.setattr(flows.cluster, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(ExtractError, match=r"^tcp://127\.0\.0\.1:1: no Dask scheduler answers \("):
        extract_msrvtt(str(tiny_data), str(store), config=ExtractConfig(random_init=True, ast_size="tiny"),
                       dask_address="tcp://127.0.0.1:1")
    with pytest.raises(ExtractError, match=r"dask address 'local:0': want local:N"):
        extract_msrvtt(str(tiny_data), str(store), config=ExtractConfig(random_init=True, ast_size="tiny"),
                       dask_address="local:0")
    assert not store.exists()


def test_worker_killed_midway_loses_nothing(prefect_server, tiny_data, tmp_path):
    from distributed import Client

    from flows.extract import extract_msrvtt

    steps = "probe,frames,text"
    env = vtr_env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "home"))
    with dask_cluster(tmp_path, env) as (address, _):
        start_task_stream(address)
        store = tmp_path / "killed.zarr"
        log = open(tmp_path / "run.log", "w")
        run = subprocess.Popen(vtr_cmd("extract", "--data-root", tiny_data, "--store", store, *TINY,
                                       "--video-chunk", "1", "--steps", steps, "--dask", address),
                               env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        with Client(address, timeout="30s") as c:
            pids = c.run(os.getpid)
            deadline = time.time() + 300
            victim = None
            while victim is None:
                assert run.poll() is None and time.time() < deadline, (tmp_path / "run.log").read_text()[-3000:]
                busy = {w: [k for k in keys if str(k).startswith("frames_block")] for w, keys in c.processing().items()}
                victim = next((w for w, keys in busy.items() if keys), None)
                time.sleep(0.2)
            time.sleep(1.0)  # inside the block: the encoder is running
            os.kill(pids[victim], signal.SIGKILL)
        out, _ = run.communicate(timeout=600)
        log.close()
        assert run.returncode == 0, out[-3000:] + (tmp_path / "run.log").read_text()[-3000:]
        finished = {key: worker for key, worker, *_ in compute_spans(task_stream(address))}
    # the blocks the dead worker held ran again on the other one, and every block completed
    assert busy[victim] and all(finished.get(k) not in (None, victim) for k in busy[victim]), (busy, finished)
    result = json.loads(out[out.index("{"):])
    assert sum(result["steps"]["frames"]["workers"].values()) == 6
    assert victim not in result["steps"]["text"]["workers"]  # the text step ran after the kill
    killed = open_store(store)
    # no item lost: every video done but the corrupt one, every caption done
    assert [v for v, s in zip(killed.video.values, killed.frames_state.values) if s != DONE] == ["video2"]
    assert killed.frames_state.values[list(killed.video.values).index("video2")] == FAILED
    assert (killed.text_state.values == DONE).all() and check_store(store) == []
    # the same features as a run nobody interrupted (here, in this process, one block at a time)
    ref = tmp_path / "ref.zarr"
    extract_msrvtt(str(tiny_data), str(ref), config=ExtractConfig(
        random_init=True, ast_size="tiny", workers=1, video_chunk=1, steps=steps.split(",")))
    ref = open_store(ref)
    for name in ("frame_features", "frame_mask", "caption_tokens", "caption_embedding", "frames_state", "text_state"):
        np.testing.assert_array_equal(killed[name].values, ref[name].values, err_msg=name)
