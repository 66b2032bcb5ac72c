import os
import socket
import subprocess
import sys
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
def prefect_server(prefect_api) -> str:
    """The session's Prefect server (tests/conftest.py), for tests that talk to it by URL."""
    return prefect_api
