import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
TINY = ["--random-init", "--ast-size", "tiny", "--crawl-retries", "0", "--workers", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vtr_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1"}
    env.update(extra)
    return env


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def vtr_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "vtr.cli", *map(str, args)]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, served_sample) -> Path:
    """Six sample videos, silent ones' audio served on loopback; video2 is truncated to a
    third of its bytes (a corrupt file)."""
    # seed 8: video1 and video5 are silent (their audio is crawled), video2 has a track
    root = served_sample(tmp_path_factory.mktemp("data") / "msrvtt", n_videos=6, seed=8)
    bad = root / "videos" / "all" / "video2.mp4"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real Prefect server on a free loopback port, stopped after the session."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = vtr_env(PREFECT_HOME=str(home))
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("prefect server did not start:\n" + (home / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)
        log.close()
