"""flows.server's failures to start are one line naming the cause."""
import subprocess
import sys

import pytest

from flows.errors import ExtractError
from flows.server import STARTUP_TIMEOUT_ENV, LocalServer, startup_timeout

from .conftest import free_port


def test_startup_timeout_setting(monkeypatch):
    monkeypatch.setenv(STARTUP_TIMEOUT_ENV, "12.5")
    assert startup_timeout() == 12.5
    monkeypatch.setenv(STARTUP_TIMEOUT_ENV, "soon")
    with pytest.raises(ExtractError, match=f"{STARTUP_TIMEOUT_ENV}='soon': not a number"):
        startup_timeout()


def test_a_server_that_never_answers_is_refused_in_time(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server = LocalServer(proc, free_port(), str(log))
        with pytest.raises(ExtractError, match=f"did not answer within 1 s .*{STARTUP_TIMEOUT_ENV}"):
            server._wait_healthy(deadline=0.0, timeout=1)
    finally:
        proc.kill()
        proc.wait()


def test_a_server_that_dies_at_start_up_names_its_last_words(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "nosuchdb://x")
    with pytest.raises(ExtractError, match="local Prefect API server exited with status") as e:
        LocalServer.start(timeout=120)
    assert "nosuchdb" in str(e.value) and "\n" not in str(e.value)
