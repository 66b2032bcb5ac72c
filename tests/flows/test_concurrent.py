"""`vtr extract` on its own Prefect server (no PREFECT_API_URL): two runs started together
both complete, and a SIGKILLed run takes its server down with it."""
import os
import signal
import socket
import subprocess
import time
import urllib.request

import psutil
import pytest

from storage import check_store

from .conftest import TINY, vtr_cmd, vtr_env

pytestmark = pytest.mark.slow
STEPS = ["--steps", "probe,crawl,compress,frames,text"]


@pytest.fixture(scope="module")
def own_env(tmp_path_factory):
    """No PREFECT_API_URL: each `vtr extract` starts its own server. One Prefect home for
    the module, as for a user (its database is migrated once)."""
    env = vtr_env(PREFECT_HOME=str(tmp_path_factory.mktemp("own-home")))
    env.pop("PREFECT_API_URL", None)
    return env


def _servers_of(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in kids if "flows.server" in " ".join(_cmdline(p))]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _listening_port(p: psutil.Process) -> int | None:
    try:
        conns = p.net_connections(kind="tcp")
    except psutil.Error:
        return None
    return next((c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN), None)


def _port_free(port: int) -> bool:
    """Nothing listens there: a new server could take it (as servers do, with
    SO_REUSEADDR: the dead server's connections may linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
    return True


def test_two_runs_started_together_both_complete(tiny_data, tmp_path, own_env):
    stores = [tmp_path / "a.zarr", tmp_path / "b.zarr"]
    procs = [subprocess.Popen(vtr_cmd("extract", "--data-root", tiny_data, "--store", s, *TINY, *STEPS),
                              env=own_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in stores]
    servers = []
    while any(p.poll() is None for p in procs) and len(servers) < 2:
        servers = [s for p in procs for s in _servers_of(p.pid)]
        time.sleep(0.2)
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
        assert "Traceback" not in err and "address already in use" not in err
    for s in stores:
        assert check_store(str(s)) == []
    # each run had a server of its own, and stopped it
    assert len({s.pid for s in servers}) == 2
    assert not [s for s in servers if s.is_running() and s.status() != psutil.STATUS_ZOMBIE]


def test_sigkilled_run_takes_its_server_down(tiny_data, tmp_path, own_env):
    store = tmp_path / "k.zarr"
    proc = subprocess.Popen(vtr_cmd("extract", "--data-root", tiny_data, "--store", store, *TINY, *STEPS),
                            env=own_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    others = []
    try:
        deadline = time.time() + 600
        server, port = None, None
        while time.time() < deadline and proc.poll() is None and not store.exists():
            found = _servers_of(proc.pid)
            if found and port is None:
                server, port = found[0], _listening_port(found[0])
            time.sleep(0.2)
        assert proc.poll() is None and store.exists(), "the flow ended before it could be killed"
        assert server is not None and port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=10) as r:
            assert r.status == 200
        others = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.pid != server.pid]
        os.kill(proc.pid, signal.SIGKILL)  # the run only, not its process group
        proc.wait()
        gone, alive = psutil.wait_procs([server], timeout=15)
        assert not alive, f"the Prefect server {server.pid} outlived its SIGKILLed run"
        # the kernel closes a dead listener's socket at once; allow a moment on a busy machine
        deadline = time.time() + 30
        while not _port_free(port) and time.time() < deadline:
            time.sleep(0.5)
        holders = [(c.pid, c.status) for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port]
        assert _port_free(port), f"port {port} still taken: {holders}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in others:  # decode workers: not what this test is about
            try:
                p.kill()
            except psutil.Error:
                pass
