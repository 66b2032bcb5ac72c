"""A static HTTP server on the loopback interface, for the sample dataset's audio.

The sample's silent videos name their "original" audio by a URL on this server, so the
crawl runs for real (yt-dlp, ffmpeg, HTTP) without any traffic leaving the machine. The
port is chosen by the OS; single byte ranges are served so that ffmpeg can seek the way it
does against real media hosts.
"""
from __future__ import annotations

import functools
import http.server
import ipaddress
import os
import re
import threading
from urllib.parse import urlparse

LOOPBACK_HOST = "127.0.0.1"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def is_loopback_url(url: str) -> bool:
    """True for an http(s) URL whose host is a loopback address or ``localhost``."""
    parts = urlparse(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus ``Range: bytes=a-b`` (one range), quiet."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        rng = _RANGE.match(self.headers.get("Range", "").strip())
        path = self.translate_path(self.path)
        if rng is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        a, b = rng.groups()
        if a == "":  # a suffix: the last b bytes
            first, last = max(0, size - int(b or 0)), size - 1
        else:
            first, last = int(a), min(int(b) if b else size - 1, size - 1)
        if first >= size or first > last:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        f = open(path, "rb")
        f.seek(first)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = last - first + 1
        return f

    def copyfile(self, source, outputfile) -> None:
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        self._remaining = None
        while remaining > 0:
            buf = source.read(min(64 * 1024, remaining))
            if not buf:
                break
            outputfile.write(buf)
            remaining -= len(buf)

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # ffmpeg drops connections when it seeks


class SampleServer:
    """Serves ``root`` on ``http://127.0.0.1:PORT`` from a daemon thread until ``stop()``.

    ``port`` 0 lets the OS choose; a caller may ask for a port it was given before (a
    demo re-run keeps its URLs) and falls back to 0 when that one is taken."""

    def __init__(self, root: str | os.PathLike, port: int = 0):
        handler = functools.partial(_RangeHandler, directory=os.fspath(root))
        self._httpd = http.server.ThreadingHTTPServer((LOOPBACK_HOST, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.port}"

    def start(self) -> "SampleServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sample-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "SampleServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_sample_server(root: str | os.PathLike, prefer_port: int = 0) -> SampleServer:
    """A started server on ``prefer_port`` when it is free, else on a port the OS picks."""
    os.makedirs(root, exist_ok=True)
    if prefer_port:
        try:
            return SampleServer(root, prefer_port).start()
        except OSError:
            pass
    return SampleServer(root).start()
