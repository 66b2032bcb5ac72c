"""`vtr extract` without a Prefect server (no PREFECT_API_URL): the core runs in the
command's own process. It opens no listening socket and starts no server; a SIGKILL
during the frames decode leaves no decode worker behind; a Ctrl-C to the whole process
group stops it within 10 s with exit status 130, records no item failed because of the
signal, and a resume gives the store an uninterrupted run gives; the flow gives it too."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from flows.config import ExtractConfig
from storage import DONE, FAILED, open_store

from .conftest import TINY, vtr_cmd, vtr_env

pytestmark = pytest.mark.slow
STEPS = ["--steps", "probe,crawl,frames,audio,text", "--video-chunk", "2", "--tag-min-count", "2"]
# short-lived tools the run may start (Python's platform module asks `uname -p` once)
TOOLS = {"ffmpeg", "ffprobe", "uname"}


@pytest.fixture(scope="module")
def data(served_sample, tmp_path_factory):
    """Six sample videos, the silent ones' audio served on loopback; all readable."""
    return served_sample(tmp_path_factory.mktemp("direct") / "msrvtt", n_videos=6, seed=8)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = vtr_env(PREFECT_HOME=str(tmp_path_factory.mktemp("home")))
    env.pop("PREFECT_API_URL", None)  # the session's flow tests set it: this is the direct run
    return env


@pytest.fixture(scope="module")
def uninterrupted(data, env, tmp_path_factory):
    store = tmp_path_factory.mktemp("full") / "full.zarr"
    r = subprocess.run(vtr_cmd("extract", "--data-root", data, "--store", store, *TINY, *STEPS), env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return store


def _family(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _look(proc: psutil.Process) -> tuple[list[str], list[psutil.Process]]:
    """Problems seen now (a listening socket, a child that is neither a forked worker nor
    an ffmpeg tool) and the forked workers."""
    problems, workers = [], []
    try:
        own = proc.cmdline()
    except psutil.Error:
        return problems, workers
    for p in _family(proc):
        try:
            listening = [c.laddr for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if listening:
            problems.append(f"{p.pid} {cmd[:3]} listens on {listening}")
        if p.pid == proc.pid:
            continue
        if cmd == own:
            workers.append(p)
        elif cmd and os.path.basename(cmd[0]) not in TOOLS and "extractors.crawl" not in cmd:
            problems.append(f"child {p.pid}: {cmd[:4]}")
    return problems, workers


def _start(data, store, env) -> subprocess.Popen:
    # its own process group: a terminal's Ctrl-C reaches the whole group
    return subprocess.Popen(vtr_cmd("extract", "--data-root", data, "--store", store, *TINY, *STEPS), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _until_decoding(proc: subprocess.Popen) -> tuple[list[str], list[psutil.Process]]:
    """Watch the run until its frames decode worker is up; every problem seen on the way.
    A decode worker is a fork that stays one for a while (a tool's subprocess shows the
    same command line too, for the moment between its fork and its exec)."""
    ps, seen, first = psutil.Process(proc.pid), [], {}
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        problems, workers = _look(ps)
        seen += problems
        now = time.monotonic()
        for w in workers:
            first.setdefault(w.pid, now)
        # a tool's fork lasts milliseconds before its exec; a decode worker lives for its
        # block (under a second here on an idle machine)
        settled = [w for w in workers if now - first[w.pid] > 0.15]
        if settled:
            return seen, settled
        time.sleep(0.01)
    out, err = proc.communicate()
    pytest.fail(f"the run ended (status {proc.returncode}) before a decode worker was seen:\n{err[-3000:]}")


def _reap(proc: subprocess.Popen, family: list[psutil.Process]) -> None:
    """Kill what a failed check left (its pipes would keep ``communicate`` waiting)."""
    for p in family:
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.communicate(timeout=60)


def test_no_server_and_sigkill_leaves_no_decode_worker(data, env, tmp_path):
    proc = _start(data, tmp_path / "k.zarr", env)
    family = []
    try:
        seen, workers = _until_decoding(proc)
        assert seen == []
        family = _family(psutil.Process(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)  # the run only, not its process group
        proc.wait()
        gone, alive = psutil.wait_procs(family[1:], timeout=10)
        assert not alive, [(p.pid, p.cmdline()) for p in alive if p.is_running()]
        assert workers and all(w in gone or not w.is_running() for w in workers)
    finally:
        _reap(proc, family)


def test_ctrl_c_stops_within_10s_and_a_resume_equals_an_uninterrupted_run(data, env, uninterrupted, tmp_path):
    store = tmp_path / "c.zarr"
    proc = _start(data, store, env)
    family = []
    try:
        # the moment the frames step starts its blocks (its log line): on an idle machine
        # the whole run takes seconds, too short to wait for a settled decode worker
        before = []
        for line in proc.stderr:
            before.append(line)
            if line.startswith("INFO frames: ") and "block(s)" in line:
                break
        else:
            pytest.fail("the run ended before the frames step started:\n" + "".join(before)[-3000:])
        family = _family(psutil.Process(proc.pid))
        t = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t
        err = "".join(before) + err
    finally:
        if proc.poll() is None:
            _reap(proc, family)
    assert proc.returncode == 130 and took < 10, (proc.returncode, took, err[-3000:])
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted"), err[-3000:]
    assert not [p for p in family[1:] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    ds = open_store(str(store))
    states = {s: ds[f"{s}_state"].values for s in ("frames", "audio", "text")}
    for s, state in states.items():  # none failed because of the signal
        assert (state != FAILED).all(), ds[f"{s}_error"].values
    # the signal did stop the run: on a loaded machine it may land in the audio step's
    # fbank workers (forks of the run, like the decode workers) rather than in frames
    assert any((state != DONE).any() for state in states.values())

    r = subprocess.run(vtr_cmd("extract", "--data-root", data, "--store", store, *TINY, *STEPS), env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_store(uninterrupted, store, _media(uninterrupted, store))


def _assert_same_store(a_path, b_path, swaps: dict[str, str] | None = None):
    a, b = open_store(str(a_path)), open_store(str(b_path))
    assert sorted(a.variables) == sorted(b.variables)
    for name in a.variables:
        x, y = a[name].values, b[name].values
        if x.dtype.kind in "OUT":
            x, y = (np.array([_swap(str(s), swaps) for s in v.ravel()]).reshape(v.shape) for v in (x, y))
            assert (x == y).all(), name
        elif x.dtype.kind == "f":
            np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), atol=2e-3, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


def _media(*stores) -> dict[str, str]:
    """Each store's own media folder (the crawled audio's path) reads the same."""
    return {f"{s}.media": "MEDIA" for s in stores}


def _swap(s: str, swaps: dict[str, str] | None) -> str:
    for k, v in (swaps or {}).items():
        s = s.replace(k, v)
    return s


def test_the_flow_gives_the_store_of_the_direct_run(prefect_api, data, uninterrupted, tmp_path):
    from flows.extract import extract_dataset

    store = tmp_path / "flow.zarr"
    cfg = ExtractConfig(random_init=True, ast_size="tiny", crawl_retries=0, workers=1, video_chunk=2,
                        tag_min_count=2, steps=["probe", "crawl", "frames", "audio", "text"])
    extract_dataset(dataset="msrvtt", data_root=str(data), store=str(store), config=cfg)
    # the media folders differ (each store's own), nothing else may
    _assert_same_store(uninterrupted, store, _media(uninterrupted, store))


def test_the_core_imports_no_prefect():
    code = "import flows.run, vtr.cli, sys; assert 'prefect' not in sys.modules, 'prefect imported'"
    r = subprocess.run([sys.executable, "-c", code], env=vtr_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
