"""Missing-audio recovery: fetch the ``start``-``end`` section of a video URL, audio only,
as 16 kHz mono WAV, with yt-dlp's Python API.

Each attempt runs in a fresh interpreter (``python -m extractors.crawl``, arguments as JSON
on stdin, never on a command line) in its own session with a wall-clock bound: yt-dlp hands
section downloads to an ffmpeg child that has no read timeout of its own, so a stalled
server would otherwise hang the run, and killing the session kills that child too. A
subprocess rather than multiprocessing, so daemonic workers (Dask, DataLoader) can crawl.
Each failure is classified (``classify``): permanent ones (the video is gone, private,
blocked or gated; HTTP 4xx) are tried once, transient ones (HTTP 5xx, 429, timeouts,
YouTube's bot check) are retried with back-off, local ones (ffmpeg) are not retried.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

from extractors.errors import one_line
from extractors.workers import tool_preexec


@dataclass
class CrawlResult:
    url: str
    status: str           # "crawled" | "failed"
    path: str = ""        # the WAV when crawled
    error: str = ""       # one line when failed
    attempts: int = 0
    error_class: str = ""  # permanent | transient | local, when failed

    def to_dict(self) -> dict:
        return asdict(self)


# Checked in this order. YouTube's reasons as yt-dlp prints them ("[youtube] <id>: Video
# unavailable. This video has been removed by the uploader"): they never heal by retrying.
# Its bot check ("Sign in to confirm you're not a bot") and "try again later" are throttling.
_TRANSIENT = re.compile(r"HTTP Error (5\d\d|408|429)\b|confirm you.re not a bot|"
                        r"try again later|rate-limited|timed out|Read timed out|Connection (reset|refused|aborted)|"
                        r"Temporary failure|Remote end closed", re.I)
_PERMANENT = re.compile(r"HTTP Error 4\d\d\b|Unsupported URL|is not a valid URL|No video formats found|"
                        r"Unable to extract|Video unavailable|Private video|This video is private|"
                        r"This video has been removed|account .*(has been )?terminated|copyright|"
                        r"Sign in to confirm your age|age-restricted|inappropriate for some users|"
                        r"members-only|Join this channel|not available (from|in) your (location|country)|"
                        r"not made this video available|This video is no longer available|"
                        r"not crawled|no URL", re.I)
_LOCAL = re.compile(r"ffmpeg|ffprobe|Postprocessing|produced no WAV|not audio|crawler process failed", re.I)


def classify(error: str) -> str:
    """``permanent`` (tried once), ``transient`` (retried with back-off) or ``local``
    (this machine's ffmpeg or conversion: not retried). Unknown messages are transient."""
    if _TRANSIENT.search(error):
        return "transient"
    if _PERMANENT.search(error):
        return "permanent"
    return "local" if _LOCAL.search(error) else "transient"


class _Quiet:
    """yt-dlp logger: keep the last error line, print nothing."""

    def __init__(self):
        self.errors: list[str] = []

    def debug(self, msg):
        pass

    def info(self, msg):
        pass

    def warning(self, msg):
        pass

    def error(self, msg):
        self.errors.append(str(msg))


def _download(url: str, workdir: str, cut: list[str], section: tuple[float, float] | None,
              allow_file_urls: bool, socket_timeout: float) -> tuple[str, str]:
    """One yt-dlp download, converted to WAV with ``cut`` as extra ffmpeg output options:
    ("ok", wav path) or ("err", message)."""
    import yt_dlp

    log = _Quiet()
    opts = {
        "format": "bestaudio/best",  # the generic extractor offers one format of unknown codec
        "outtmpl": os.path.join(workdir, "dl.%(ext)s"),
        "postprocessors": [{"key": "FFmpegExtractAudio", "preferredcodec": "wav"}],
        "postprocessor_args": {"extractaudio": [*cut, "-ar", "16000", "-ac", "1"]},
        "socket_timeout": socket_timeout,
        "retries": 0, "fragment_retries": 0, "extractor_retries": 0,
        "noplaylist": True, "quiet": True, "no_warnings": True, "noprogress": True,
        "logger": log, "enable_file_urls": allow_file_urls, "cachedir": False,
    }
    if section is not None:
        opts["download_ranges"] = functools.partial(_section_if_ranges, section)
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.download([url])
        wavs = [f for f in os.listdir(workdir) if f.endswith(".wav")]
        if not wavs:
            raise RuntimeError("yt-dlp produced no WAV")
        return "ok", os.path.join(workdir, wavs[0])
    except BaseException as e:  # noqa: BLE001 - becomes the recorded error line
        msg = str(e) or (log.errors[-1] if log.errors else type(e).__name__)
        return "err", msg.replace("ERROR: ", "")


def _section_if_ranges(section: tuple[float, float], info: dict, ydl) -> list[dict]:
    """yt-dlp's ``download_ranges``: the section, when the media's server answers byte
    ranges. ffmpeg cuts a section with an input-side seek; on a server without range
    requests it must read forward to the start, and that seek (ffmpeg 5.1, a PCM WAV) lands
    a variable number of 32 KiB buffers late: a window seconds after ``start`` at the right
    length. Raising sends ``_attempt`` to the whole file, cut exactly while converted."""
    from yt_dlp.networking import Request

    fmt = info if info.get("url") else (info.get("formats") or [{}])[-1]
    if fmt.get("protocol", "https") in ("http", "https") and fmt.get("url"):
        req = Request(fmt["url"], headers={**(fmt.get("http_headers") or {}), "Range": "bytes=0-0"})
        with ydl.urlopen(req) as r:
            if r.status != 206:
                raise RuntimeError("the server has no range requests: taking the whole file")
    return [{"start_time": section[0], "end_time": section[1]}]


def _attempt(url: str, start: float | None, end: float | None, workdir: str,
             allow_file_urls: bool, socket_timeout: float) -> tuple[str, str]:
    """One attempt: the window as a section download, else the whole file cut while it is
    converted. The WAV lasts exactly ``end - start`` when the source is long enough."""
    if start is None or end is None or not end > start >= 0:
        return _download(url, workdir, [], None, allow_file_urls, socket_timeout)
    length = ["-t", f"{float(end) - float(start):.3f}"]
    whole = ["-ss", f"{float(start):.3f}", *length]
    if url.lower().startswith("file:"):  # yt-dlp cannot fetch sections of file URLs
        return _download(url, workdir, whole, None, allow_file_urls, socket_timeout)
    status, payload = _download(url, workdir, length, (float(start), float(end)),
                                allow_file_urls, socket_timeout)
    if status == "ok" or classify(payload) == "permanent":
        return status, payload
    # ffmpeg cuts a section by seeking; a file whose index is at its end (an mp4/m4a without
    # faststart) yields an empty section, and a server without range requests a misplaced
    # one (``_section_if_ranges`` refuses it). Take it whole.
    for f in os.listdir(workdir):
        os.remove(os.path.join(workdir, f))
    return _download(url, workdir, whole, None, allow_file_urls, socket_timeout)


def _run_attempt(job: dict, timeout_s: float) -> tuple[str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "extractors.crawl"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=tool_preexec())
    try:
        out, _ = proc.communicate(json.dumps(job).encode(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        return "err", f"timed out after {timeout_s:g} s"
    try:
        status, payload = json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "err", f"crawler process failed (exit code {proc.returncode})"
    return status, payload


def _check_url(url: str, allow_file_urls: bool) -> str | None:
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file" and allow_file_urls:
        return None
    if scheme == "file":
        return "file URLs are not crawled unless allow_file_urls is set"
    return f"URL scheme {scheme or '(none)'!r} is not crawled (http/https only)"


def _valid_wav(path: str) -> bool:
    from extractors.errors import MediaError
    from extractors.probe import probe

    try:
        info = probe(path)
    except MediaError:
        return False
    return info.has_audio and info.duration > 0


def window_problem(start: float | None, end: float | None) -> str | None:
    """Why a time window cannot be cut (None: it can; None bounds mean the whole file). A
    NaN bound or an end at or before the start would otherwise crawl the whole file."""
    if any(t is not None and math.isnan(t) for t in (start, end)):
        return f"time window [{start}, {end}] is not a number"
    if start is not None and end is not None and end <= start:
        return f"time window ends at {end} s, not after its start at {start} s"
    return None


# The crawl's defaults, here once: ExtractConfig and `vtr media crawl-audio` take them from here.
RETRIES = 3
BACKOFF_S = 2.0
TIMEOUT_S = 120.0
SOCKET_TIMEOUT_S = 20.0


def crawl_audio(url: str, start: float | None, end: float | None, out_wav: str | os.PathLike, *,
                allow_file_urls: bool = False, retries: int = RETRIES, backoff_s: float = BACKOFF_S,
                timeout_s: float = TIMEOUT_S, socket_timeout_s: float = SOCKET_TIMEOUT_S) -> CrawlResult:
    """Up to ``1 + retries`` attempts while failures are transient, sleeping ``backoff_s *
    2**k`` between them; a permanent or local failure ends the tries. Each attempt is killed
    after ``timeout_s``. The WAV is moved to ``out_wav`` only when it probes as audio; an
    existing valid ``out_wav`` is kept and reported as crawled."""
    out_wav = os.fspath(out_wav)
    bad = (_check_url(url, allow_file_urls) if url else "no URL") or window_problem(start, end)
    if bad:
        return CrawlResult(url, "failed", error=bad, error_class="permanent")
    if os.path.exists(out_wav) and _valid_wav(out_wav):
        return CrawlResult(url, "crawled", path=out_wav)
    os.makedirs(os.path.dirname(os.path.abspath(out_wav)), exist_ok=True)
    error = ""
    attempts = 0
    for k in range(1 + max(0, retries)):
        if k:
            time.sleep(backoff_s * 2 ** (k - 1))
        attempts += 1
        workdir = tempfile.mkdtemp(prefix=".crawl-", dir=os.path.dirname(os.path.abspath(out_wav)))
        try:
            job = {"url": url, "start": start, "end": end, "workdir": workdir,
                   "allow_file_urls": allow_file_urls, "socket_timeout": socket_timeout_s}
            status, payload = _run_attempt(job, timeout_s)
            if status == "ok" and _valid_wav(payload):
                os.replace(payload, out_wav)
                return CrawlResult(url, "crawled", path=out_wav, attempts=attempts)
            error = one_line(payload if status == "err" else "downloaded file is not audio")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if classify(error) != "transient":
            break
    return CrawlResult(url, "failed", error=error, attempts=attempts, error_class=classify(error))


if __name__ == "__main__":  # one attempt, for _run_attempt: JSON job on stdin, result on stdout
    job = json.loads(sys.stdin.read())
    print(json.dumps(_attempt(job["url"], job["start"], job["end"], job["workdir"],
                              job["allow_file_urls"], job["socket_timeout"])), flush=True)
