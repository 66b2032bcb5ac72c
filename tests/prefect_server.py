"""The test session's Prefect API server: ``python -m tests.prefect_server PARENT_PID``
binds 127.0.0.1 port 0 (nothing can race for the port), prints it, serves Prefect's API
with uvicorn, and dies with the pytest process that started it (``start``)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def start(log_path: Path, timeout_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    """The server process and its API URL, once it answers; its stderr goes to ``log_path``
    (in pytest's own temporary folder: nothing is left in /tmp)."""
    log = open(log_path, "wb")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_UI_ENABLED="0", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.Popen([sys.executable, "-m", "tests.prefect_server", str(os.getpid())], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    log.close()  # the child holds its own copy
    url = f"http://127.0.0.1:{int(proc.stdout.readline() or 0)}/api"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except (OSError, ValueError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the test Prefect server did not start; see {log_path}")
        time.sleep(0.25)


def main(parent: int) -> None:
    import socket

    import uvicorn

    from extractors.workers import die_with_parent

    die_with_parent(parent)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config("prefect.server.api.server:create_app", factory=True, log_level="error",
                            lifespan="on", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(int(sys.argv[1]))
