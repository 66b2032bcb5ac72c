import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
TINY = ["--random-init", "--ast-size", "tiny", "--crawl-retries", "0", "--workers", "1"]
# the session's tiny store (``tiny_store``): ExtractConfig(**TINY_STORE)
TINY_STORE = dict(random_init=True, ast_size="tiny", crawl_retries=0, workers=1, tag_min_count=2)


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
def tiny_store(tiny_data, tmp_path_factory) -> tuple[str, dict]:
    """``(store, the flow's result)``: ``tiny_data`` extracted once in process, every step
    (random-init encoders, tiny AST), video2 failed. Tests that change it work on a copy
    (``copy_store``)."""
    from flows.config import ExtractConfig
    from flows.extract import extract_msrvtt

    store = str(tmp_path_factory.mktemp("local") / "s.zarr")
    result = extract_msrvtt(data_root=str(tiny_data), store=store, config=ExtractConfig(**TINY_STORE))
    return store, result


def copy_store(store: str, dest: Path) -> Path:
    """The store and its media folder (compressed videos, crawled audio) copied under ``dest``."""
    import shutil

    out = dest / Path(store).name
    shutil.copytree(store, out)
    if Path(store + ".media").exists():
        shutil.copytree(store + ".media", str(out) + ".media")
    return out


@pytest.fixture(scope="session")
def prefect_server(prefect_api) -> str:
    """The session's Prefect server (tests/conftest.py), for tests that talk to it by URL."""
    return prefect_api
