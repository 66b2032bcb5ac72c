"""A Prefect API for one run: ``with prefect_api(): extract_msrvtt(...)``.

Prefect's own ephemeral server picks a port by trying random ones in 8000-8999 and then
polls ``/api/health`` on it, so two runs started together can collide on the port or even
talk to each other's server. Here the server process binds 127.0.0.1 port 0 itself (the
OS picks a free port, nothing can race for it) and reports the port on its stdout.

The server dies with the run that started it, even when that run is SIGKILLed: the child
asks Linux for SIGKILL on its parent's death (``PR_SET_PDEATHSIG``) and, as a fallback
where that is missing, a thread polls the parent pid. Start-ups against one Prefect home
are serialised by a file lock, so two servers never migrate one fresh database at once.

``PREFECT_API_URL`` set (``prefect server start``, a deployment's worker): that server is
used and nothing is started.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

from flows.errors import ExtractError

# Start-up bound of the local server, in seconds: a fresh database's migrations take ~15 s
# idle and several times that on a loaded machine. The same setting bounds Prefect's own
# ephemeral server; set it in the environment to change either.
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_S = 300.0
STOP_GRACE_S = 10.0


def startup_timeout() -> float:
    value = os.environ.get(STARTUP_TIMEOUT_ENV)
    try:
        return float(value) if value else STARTUP_TIMEOUT_S
    except ValueError:
        raise ExtractError(f"{STARTUP_TIMEOUT_ENV}={value!r}: not a number of seconds") from None


@contextlib.contextmanager
def prefect_api(quiet: Callable[[BaseException], bool] | None = None) -> Iterator[str]:
    """The API URL the flows of this block use: ``PREFECT_API_URL`` if set, else a local
    server started here and stopped on exit. ``quiet(exc)`` true: Prefect's console
    traceback for ``exc`` is left out (the caller reports it in one line)."""
    with _quiet_console(quiet):
        if os.environ.get("PREFECT_API_URL"):
            yield os.environ["PREFECT_API_URL"]
            return
        from prefect.settings import PREFECT_API_URL, temporary_settings

        server = LocalServer.start()
        try:
            os.environ["PREFECT_API_URL"] = server.url  # Dask workers and other children
            with temporary_settings(updates={PREFECT_API_URL: server.url}):
                try:
                    yield server.url
                finally:
                    _flush_to_api()
        finally:
            os.environ.pop("PREFECT_API_URL", None)
            server.stop()


class LocalServer:
    """A Prefect API server on 127.0.0.1, a child of this process (``start``/``stop``)."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: str):
        self.proc, self.port, self.log_path = proc, port, log_path
        self.url = f"http://127.0.0.1:{port}/api"

    @classmethod
    def start(cls, timeout: float | None = None) -> LocalServer:
        from prefect.settings import get_current_settings

        timeout = startup_timeout() if timeout is None else timeout
        home = str(get_current_settings().home)
        os.makedirs(home, exist_ok=True)
        log = tempfile.NamedTemporaryFile(prefix="vtr-prefect-server-", suffix=".log", delete=False)
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(PREFECT_UI_ENABLED="0", PREFECT_SERVER_ANALYTICS_ENABLED="false")
        # the child runs this very module, wherever the package was imported from
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        deadline = time.monotonic() + timeout
        with _home_lock(home):
            proc = subprocess.Popen([sys.executable, "-m", "flows.server", str(os.getpid())], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
            log.close()
            server = None
            try:
                server = cls(proc, _read_port(proc, deadline, log.name), log.name)
                server._wait_healthy(deadline, timeout)
            except BaseException:
                _terminate(proc)
                raise
        return server

    def _wait_healthy(self, deadline: float, timeout: float) -> None:
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise ExtractError(f"the local Prefect API server exited with status {self.proc.returncode}: "
                                   f"{_last_line(self.log_path)}")
            if time.monotonic() > deadline:
                raise ExtractError(f"the local Prefect API server did not answer within {timeout:.0f} s "
                                   f"(raise {STARTUP_TIMEOUT_ENV}, or point PREFECT_API_URL at a server)")
            time.sleep(0.25)

    def stop(self) -> None:
        _terminate(self.proc)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


def _read_port(proc: subprocess.Popen, deadline: float, log_path: str) -> int:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    try:
        return int(line)
    except ValueError:
        proc.poll()
        raise ExtractError(f"the local Prefect API server did not start: {_last_line(log_path)}") from None


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        lines = []
    return lines[-1] if lines else "no output"


@contextlib.contextmanager
def _home_lock(home: str) -> Iterator[None]:
    """One server start-up (database migration) at a time per Prefect home."""
    try:
        import fcntl
    except ImportError:  # not POSIX: start-ups are not serialised
        yield
        return
    with open(os.path.join(home, ".vtr-server-start.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _flush_to_api() -> None:
    """Send the run's queued logs and events while the server still listens (else they
    fail at exit with connection errors on the console)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    with contextlib.suppress(Exception):
        APILogHandler.flush()
    with contextlib.suppress(Exception):
        EventsWorker.drain_all(timeout=10, at_exit=False)


class _QuietFilter(logging.Filter):
    def __init__(self, quiet: Callable[[BaseException], bool]):
        super().__init__()
        self.quiet = quiet

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, BaseException) and self.quiet(exc))


@contextlib.contextmanager
def _quiet_console(quiet: Callable[[BaseException], bool] | None) -> Iterator[None]:
    if quiet is None:
        yield
        return
    import prefect.main  # noqa: F401 - configures Prefect's logging (its console handlers)

    flt = _QuietFilter(quiet)
    # Prefect's console handler sits on the root logger; the flow and task run loggers
    # propagate to it (their own handlers send to the API, which keeps the traceback)
    handlers = {h for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs")
                for h in logging.getLogger(name).handlers if isinstance(h, logging.StreamHandler)}
    for h in handlers:
        h.addFilter(flt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(flt)


# --- the server process ---------------------------------------------------------------

def _die_with(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    def watch() -> None:  # the fallback, and the parent that died before prctl took
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def main(argv: list[str]) -> None:
    import socket

    _die_with(int(argv[0]))
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # as uvicorn does for its own sockets: the connections a dead server leaves in TIME_WAIT
    # then never keep the next server off the port
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config("prefect.server.api.server:create_app", factory=True, log_level="error",
                            lifespan="on", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
