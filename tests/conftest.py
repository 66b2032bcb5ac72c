"""Settings every test shares: no network hubs, no telemetry, a private Prefect home."""
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="vtr-prefect-home-"))
# Prefect's temporary server logs its shutdown after pytest has closed the captured
# streams; INFO-level chatter is not what the tests look at.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
