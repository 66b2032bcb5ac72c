"""Settings every test shares: no network hubs, no telemetry, a private Prefect home, one
Prefect API server for the session's flow tests, no connection beyond loopback
(pytest-socket, and the same rule in child interpreters), and the sample dataset served on
127.0.0.1."""
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="vtr-prefect-home-"))
# Prefect's temporary server logs its shutdown after pytest has closed the captured
# streams; INFO-level chatter is not what the tests look at.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


# What a child interpreter runs first: pytest-socket's rule (loopback hosts and Unix sockets)
# without importing pytest into every child, which would cost each a fraction of a second.
_CHILD_GUARD = """import socket


class SocketConnectBlockedError(RuntimeError):
    pass


_ALLOWED = set({hosts!r})
_connect = socket.socket.connect


def _guarded_connect(self, address, *args):
    unix = getattr(socket, "AF_UNIX", None)
    if ({allow_unix!r} and self.family == unix) or (isinstance(address, tuple) and address[0] in _ALLOWED):
        return _connect(self, address, *args)
    self.close()
    raise SocketConnectBlockedError(f"a test tried to connect to {{address!r}} (allowed: {{sorted(_ALLOWED)}})")


socket.socket.connect = _guarded_connect
"""


def pytest_configure(config) -> None:
    """pytest-socket guards this process; Python children (the crawl's yt-dlp, `vtr` run
    as a subprocess, Dask workers, Prefect's server) get the same rule from a
    ``sitecustomize`` on the PYTHONPATH they inherit."""
    hosts = config.getoption("--allow-hosts", None)
    if not hosts:
        return
    guard = config._vtr_socket_guard = tempfile.mkdtemp(prefix="vtr-socket-guard-")
    with open(os.path.join(guard, "sitecustomize.py"), "w", encoding="utf-8") as f:
        f.write(_CHILD_GUARD.format(hosts=hosts.split(","),
                                    allow_unix=bool(config.getoption("--allow-unix-socket"))))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [guard, os.environ.get("PYTHONPATH")]))


# A test whose fixtures include one of these runs a flow (in process, or `vtr extract` as a
# child inheriting PREFECT_API_URL): it gets the session's Prefect server first.
FLOW_FIXTURES = {"tiny_data", "sample_store", "prefect_server"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names is not None and FLOW_FIXTURES & set(names) and "prefect_api" not in names:
            names.insert(0, "prefect_api")


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One Prefect API server for the session (``tests.prefect_server``: a free loopback
    port, killed with pytest); PREFECT_API_URL names it to this process and to every child."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.prefect_server import start

    proc, url = start(tmp_path_factory.getbasetemp() / "prefect-server.log")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        _flush_to_api()
        os.environ.pop("PREFECT_API_URL", None)
        proc.terminate()
        proc.wait(15)


def _flush_to_api() -> None:
    """Send the queued logs and events while the server still listens (else they fail at
    exit with connection errors on the console)."""
    import contextlib

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    with contextlib.suppress(Exception):
        APILogHandler.flush()
    with contextlib.suppress(Exception):
        EventsWorker.drain_all(timeout=10, at_exit=False)


def pytest_unconfigure(config) -> None:
    guard = getattr(config, "_vtr_socket_guard", None)
    if guard:
        shutil.rmtree(guard, ignore_errors=True)


@pytest.fixture(scope="session")
def served_sample():
    """``make(root, **kw)``: the sample dataset under ``root`` with its silent videos' audio
    served from 127.0.0.1 until the session ends, so the crawl succeeds without leaving
    the machine."""
    from extractors.sample_data import make_sample_dataset
    from extractors.sample_server import start_sample_server

    servers = []

    def make(root, **kw):
        servers.append(start_sample_server(root))
        return make_sample_dataset(root, base_url=servers[-1].url, **kw)

    yield make
    for s in servers:
        s.stop()
