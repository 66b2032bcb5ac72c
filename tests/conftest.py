"""Settings every test shares: no network hubs, no telemetry, a private Prefect home."""
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="vtr-prefect-home-"))
# Prefect's temporary server logs its shutdown after pytest has closed the captured
# streams; INFO-level chatter is not what the tests look at.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


import pytest  # noqa: E402


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
