"""The crawl against real HTTP servers on 127.0.0.1 (never anything else)."""
import shutil
import time

import numpy as np
import pytest

from extractors.audio import load_audio
from extractors.crawl import crawl_audio
from extractors.probe import probe

FAST = dict(retries=1, backoff_s=0.1, socket_timeout_s=1.0, timeout_s=20.0)


@pytest.fixture(scope="module")
def served(media, http_server):
    shutil.copy(media.cfr, http_server.dir / "clip.mp4")
    shutil.copy(media.cfr, http_server.dir / "my clip é.mp4")
    (http_server.dir / "notes.mp4").write_text("plain text, not media\n" * 50)
    return http_server


def test_crawl_fetches_section_as_16k_mono_wav(served, tmp_path):
    out = tmp_path / "wav" / "video1.wav"
    r = crawl_audio(f"{served.url}/clip.mp4", 1.0, 3.0, out, **FAST)
    assert r.status == "crawled" and r.path == str(out) and r.attempts == 1 and not r.error
    p = probe(out)
    assert p.has_audio and not p.has_video and p.duration == pytest.approx(2.0, abs=0.15)
    import ffmpeg
    a = ffmpeg.probe(str(out))["streams"][0]
    assert (a["codec_name"], a["sample_rate"], a["channels"]) == ("pcm_s16le", "16000", 1)
    assert abs(load_audio(out)).max() > 0.1
    assert sorted(x.name for x in out.parent.iterdir()) == ["video1.wav"]  # no leftovers
    again = crawl_audio(f"{served.url}/clip.mp4", 1.0, 3.0, out, **FAST)
    assert again.status == "crawled" and again.attempts == 0  # existing valid WAV kept


def test_crawl_url_with_quoted_name(served, tmp_path):
    r = crawl_audio(f"{served.url}/my%20clip%20%C3%A9.mp4", 0.0, 1.0, tmp_path / "v.wav", **FAST)
    assert r.status == "crawled"


def test_404_fails_without_retry(served, tmp_path):
    r = crawl_audio(f"{served.url}/missing.mp4", 0, 2, tmp_path / "x.wav", **FAST)
    assert r.status == "failed" and "404" in r.error and r.attempts == 1 and "\n" not in r.error
    assert not (tmp_path / "x.wav").exists()


def test_server_errors_are_retried(served, tmp_path):
    r = crawl_audio(f"{served.url}/fail500/clip.mp4", 0, 2, tmp_path / "x.wav", **FAST)
    assert r.status == "failed" and "500" in r.error and r.attempts == 2


def test_stalling_server_times_out_with_retries(served, tmp_path):
    t = time.perf_counter()
    r = crawl_audio(f"{served.url}/stall/clip.mp4", 0, 2, tmp_path / "x.wav", **FAST)
    assert r.status == "failed" and "timed out" in r.error.lower() and r.attempts == 2
    assert time.perf_counter() - t < 15
    # the wall-clock bound kills an attempt even when the socket timeout is longer
    r = crawl_audio(f"{served.url}/stall/clip.mp4", 0, 2, tmp_path / "x.wav", retries=0,
                    socket_timeout_s=20, timeout_s=1.5)
    assert r.status == "failed" and r.error == "timed out after 1.5 s"


def test_text_served_as_media_fails(served, tmp_path):
    r = crawl_audio(f"{served.url}/notes.mp4", 0, 2, tmp_path / "x.wav", **FAST)
    assert r.status == "failed" and r.error and not (tmp_path / "x.wav").exists()


def test_schemes(media, tmp_path):
    url = media.cfr.as_uri()
    r = crawl_audio(url, 0, 1, tmp_path / "x.wav", **FAST)
    assert r.status == "failed" and "file URLs" in r.error and r.attempts == 0
    r = crawl_audio(url, 0.5, 2.0, tmp_path / "x.wav", allow_file_urls=True, **FAST)
    assert r.status == "crawled" and probe(r.path).duration == pytest.approx(1.5, abs=0.1)
    for bad in ("ftp://127.0.0.1/x.mp4", "", "javascript:alert(1)"):
        assert crawl_audio(bad, 0, 1, tmp_path / "y.wav").status == "failed"


@pytest.fixture(scope="module")
def long_sources(http_server):
    """30 s sources in the containers the crawl meets; the m4a/mp4 keep their index at the
    end (no faststart), which the test server (no range requests) cannot seek to. Their
    pitch rises 100 Hz each second (300 Hz in second 0): a window's pitches say where it
    starts."""
    from .conftest import ffmpeg
    tone = ["-f", "lavfi", "-i", "aevalsrc=sin(2*PI*(300+100*floor(t))*t):s=44100:d=30"]
    ffmpeg(*tone, "-c:a", "aac", str(http_server.dir / "long.m4a"))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x72:rate=10", *tone, "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(http_server.dir / "long.mp4"))
    ffmpeg(*tone, "-c:a", "libopus", "-b:a", "32k", str(http_server.dir / "long.webm"))
    ffmpeg(*tone, "-ar", "16000", "-ac", "1", str(http_server.dir / "long.wav"))
    return http_server


@pytest.mark.parametrize("ext", ["m4a", "mp4", "webm", "wav"])
def test_section_crawl_of_direct_media(long_sources, tmp_path, ext):
    """D13: a window on a direct media URL gives a WAV exactly as long as the window, from
    its start (through the whole-file fallback: no range requests here)."""
    r = crawl_audio(f"{long_sources.url}/long.{ext}", 5.0, 17.0, tmp_path / "w.wav", **FAST)
    assert r.status == "crawled", r.error
    assert probe(r.path).duration == pytest.approx(12.0, abs=0.02)
    assert _pitches(r.path, 12) == list(range(800, 2000, 100))


def test_section_crawl_through_range_requests(long_sources, tmp_path):
    from extractors.sample_server import SampleServer
    with SampleServer(long_sources.dir) as s:
        r = crawl_audio(f"{s.url}/long.m4a", 20.0, 23.5, tmp_path / "w.wav", **FAST)
    assert r.status == "crawled" and probe(r.path).duration == pytest.approx(3.5, abs=0.02)
    assert _pitches(r.path, 3) == [2300, 2400, 2500]


# --- failure classes ---------------------------------------------------------------------
def _yt_dlp_says(reason: str, video_id: str = "--1DO2V4K74") -> str:
    """The line yt-dlp prints for a YouTube refusal, built with its own classes (our
    ``_download`` drops the leading ``ERROR: ``)."""
    from yt_dlp.utils import DownloadError, ExtractorError

    err = ExtractorError(reason, expected=True, video_id=video_id, ie="youtube")
    return str(DownloadError(f"ERROR: {err}", (None, err, None))).replace("ERROR: ", "")


def _login_hint() -> str:
    from yt_dlp import YoutubeDL
    from yt_dlp.extractor.youtube import YoutubeIE

    with YoutubeDL({"quiet": True}) as ydl:
        return YoutubeIE(ydl)._youtube_login_hint


# YouTube's reasons, as its player returns them and yt-dlp joins them ("reason. subreason");
# yt-dlp's own test table skips videos with the first three strings.
PERMANENT = {
    "unavailable": "Video unavailable",
    "private": "Private video. Sign in if you've been granted access to this video",
    "removed": "This video has been removed for violating YouTube's Terms of Service",
    "removed by uploader": "Video unavailable. This video has been removed by the uploader",
    "terminated": "Video unavailable. This video is no longer available because the YouTube account "
                  "associated with this video has been terminated.",
    "copyright": "Video unavailable. This video is no longer available due to a copyright claim by Some Label",
    "age gate": None,  # built with yt-dlp's login hint below
}


@pytest.mark.parametrize("case", PERMANENT)
def test_youtube_refusals_are_permanent(case):
    from extractors.crawl import classify

    reason = PERMANENT[case] or (f"Sign in to confirm your age. This video may be inappropriate for some "
                                 f"users. {_login_hint()}")
    msg = _yt_dlp_says(reason)
    assert msg.startswith("[youtube] --1DO2V4K74: ")
    assert classify(msg) == "permanent", msg


@pytest.mark.parametrize("msg,cls", [
    (_yt_dlp_says("Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser"), "transient"),
    ("Unable to download webpage: HTTP Error 503: Service Unavailable", "transient"),
    ("Unable to download webpage: HTTP Error 429: Too Many Requests", "transient"),
    ("timed out after 120 s", "transient"),
    ("Unable to download webpage: HTTP Error 410: Gone", "permanent"),
    ("Postprocessing: audio conversion failed: Error opening output files", "local"),
    ("downloaded file is not audio", "local"),
])
def test_throttling_and_local_failures(msg, cls):
    from extractors.crawl import classify

    assert classify(msg) == cls


@pytest.mark.parametrize("code", [404, 410])
def test_gone_is_tried_once_and_recorded_permanent(served, tmp_path, code):
    path = f"/status/{code}/clip.mp4"
    r = crawl_audio(f"{served.url}{path}", 0, 2, tmp_path / "x.wav", retries=3, backoff_s=0.05,
                    socket_timeout_s=1.0, timeout_s=20.0)
    assert r.status == "failed" and str(code) in r.error and r.error_class == "permanent"
    assert r.attempts == 1 and served.hits[path] == 1


def test_503_is_retried_with_back_off(served, tmp_path):
    path = "/status/503/clip.mp4"
    t = time.perf_counter()
    r = crawl_audio(f"{served.url}{path}", 0, 2, tmp_path / "x.wav", retries=2, backoff_s=0.3,
                    socket_timeout_s=1.0, timeout_s=20.0)
    assert r.status == "failed" and "503" in r.error and r.error_class == "transient"
    assert r.attempts == 3 and served.hits[path] >= 3
    assert time.perf_counter() - t >= 0.3 + 0.6  # backoff_s, then doubled


def test_file_url_window_is_cut_from_start(long_sources, tmp_path):
    """yt-dlp fetches no sections of file URLs: the whole file is cut while converted."""
    r = crawl_audio((long_sources.dir / "long.wav").as_uri(), 5.0, 8.0, tmp_path / "w.wav",
                    allow_file_urls=True, **FAST)
    assert r.status == "crawled" and _pitches(r.path, 3) == [800, 900, 1000]


def _pitches(path, n_seconds: int, sr: int = 16000) -> list[int]:
    """The dominant frequency of each second (Hz, to the nearest 10), edges left out."""
    w = load_audio(path, sr=sr)
    out = []
    for k in range(n_seconds):
        seg = w[k * sr + sr // 8:(k + 1) * sr - sr // 8]
        out.append(int(round(np.argmax(np.abs(np.fft.rfft(seg))) * sr / seg.size, -1)))
    return out



# --- one attempt, run in this process (the crawler's child runs exactly this) ---------------
def test_an_attempt_cuts_its_window_from_the_start_on_every_path(long_sources, tmp_path):
    """The window of a file URL (cut while converted), of a server without range requests
    (the section is refused, the whole file cut) and of one with them (a section download);
    no window or a window that is not one: the whole file."""
    from extractors.crawl import _attempt
    from extractors.sample_server import SampleServer

    def run(url, start, end, name, files=False):
        work = tmp_path / name
        work.mkdir()
        status, payload = _attempt(url, start, end, str(work), files, 5.0)
        assert status == "ok", payload
        assert payload.startswith(str(work)) and payload.endswith(".wav")
        return payload

    wav = run((long_sources.dir / "long.wav").as_uri(), 5.0, 8.0, "file", files=True)
    assert probe(wav).duration == pytest.approx(3.0, abs=0.02) and _pitches(wav, 3) == [800, 900, 1000]
    wav = run(f"{long_sources.url}/long.webm", 10.0, 12.5, "norange")
    assert probe(wav).duration == pytest.approx(2.5, abs=0.02) and _pitches(wav, 2) == [1300, 1400]
    with SampleServer(long_sources.dir) as s:
        wav = run(f"{s.url}/long.wav", 21.0, 23.0, "range")
    assert probe(wav).duration == pytest.approx(2.0, abs=0.02) and _pitches(wav, 2) == [2400, 2500]
    wav = run(f"{long_sources.url}/long.wav", 0.0, 2.0, "from0")  # a window from 0 is a window
    assert probe(wav).duration == pytest.approx(2.0, abs=0.02) and _pitches(wav, 2) == [300, 400]
    for start, end, name in ((None, None, "whole"), (4.0, 4.0, "empty"), (-1.0, 3.0, "negative")):
        wav = run(f"{long_sources.url}/long.wav", start, end, name)
        assert probe(wav).duration == pytest.approx(30.0, abs=0.05) and _pitches(wav, 2) == [300, 400]


def test_an_attempt_that_fails_for_good_takes_no_second_path(served, tmp_path):
    from extractors.crawl import _attempt
    before = dict(served.hits)
    status, payload = _attempt(f"{served.url}/gone.mp4", 1.0, 2.0, str(tmp_path), False, 5.0)
    assert status == "err" and "HTTP Error 404" in payload and not payload.startswith("ERROR")
    assert served.hits.get("/gone.mp4", 0) - before.get("/gone.mp4", 0) == 1
    status, payload = _attempt(f"{served.url}/notes.mp4", None, None, str(tmp_path), False, 5.0)
    assert status == "err" and payload  # text is no audio: ffmpeg's cause, one attempt


class _Response:
    def __init__(self, status):
        self.status = status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _YDL:
    """The one call ``_section_if_ranges`` makes of yt-dlp: a request it records."""

    def __init__(self, status):
        self.status, self.requests = status, []

    def urlopen(self, req):
        self.requests.append(req)
        return _Response(self.status)


def test_a_section_is_asked_only_of_servers_that_answer_ranges():
    from extractors.crawl import _section_if_ranges
    want = [{"start_time": 5.0, "end_time": 9.5}]
    ydl = _YDL(206)
    info = {"url": "http://127.0.0.1:9/a.m4a", "protocol": "http", "http_headers": {"User-Agent": "vtr"}}
    assert _section_if_ranges((5.0, 9.5), info, ydl) == want
    (req,) = ydl.requests
    assert req.url == "http://127.0.0.1:9/a.m4a"
    assert req.headers["Range"] == "bytes=0-0" and req.headers["User-Agent"] == "vtr"
    with pytest.raises(RuntimeError, match="^the server has no range requests: taking the whole file$"):
        _section_if_ranges((5.0, 9.5), info, _YDL(200))
    # no url of its own: the last (best) format's; https counts; no protocol means https
    ydl = _YDL(206)
    formats = {"formats": [{"url": "https://h/worst", "protocol": "https"}, {"url": "https://h/best"}]}
    assert _section_if_ranges((1.0, 2.0), formats, ydl) == [{"start_time": 1.0, "end_time": 2.0}]
    assert [r.url for r in ydl.requests] == ["https://h/best"] and "User-Agent" not in ydl.requests[0].headers
    # streaming protocols cut sections themselves; nothing to probe without a url
    for info in ({"url": "https://h/x.m3u8", "protocol": "m3u8_native"}, {"formats": []}, {}):
        ydl = _YDL(200)
        assert _section_if_ranges((1.0, 2.0), info, ydl) == [{"start_time": 1.0, "end_time": 2.0}]
        assert ydl.requests == []


class _Downloader:
    """yt-dlp's YoutubeDL as ``_download`` drives it: the options it was given, and what the
    download leaves in the work folder (``writes``) or raises."""
    seen: list[dict] = []

    def __init__(self, opts):
        self.opts = opts
        _Downloader.seen.append(opts)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def download(self, urls):
        self.opts["logger"].error("ERROR: [generic] gone for good")
        behaviour = self.opts["outtmpl"]
        if _Downloader.writes:
            open(behaviour.replace("%(ext)s", "wav"), "wb").close()
        elif _Downloader.raises is not None:
            raise _Downloader.raises


def test_download_asks_yt_dlp_for_one_quiet_wav(monkeypatch, tmp_path):
    import functools

    import yt_dlp

    from extractors import crawl

    monkeypatch.setattr(yt_dlp, "YoutubeDL", _Downloader)
    _Downloader.seen, _Downloader.writes, _Downloader.raises = [], True, None
    status, path = crawl._download("https://h/x.m4a", str(tmp_path), ["-t", "2.000"], (1.0, 3.0), False, 7.0)
    assert (status, path) == ("ok", str(tmp_path / "dl.wav"))
    opts = dict(_Downloader.seen[-1])
    logger, ranges = opts.pop("logger"), opts.pop("download_ranges")
    assert isinstance(logger, crawl._Quiet)
    assert isinstance(ranges, functools.partial) and ranges.func is crawl._section_if_ranges and ranges.args == ((1.0, 3.0),)
    assert opts == {
        "format": "bestaudio/best", "outtmpl": str(tmp_path / "dl.%(ext)s"),
        "postprocessors": [{"key": "FFmpegExtractAudio", "preferredcodec": "wav"}],
        "postprocessor_args": {"extractaudio": ["-t", "2.000", "-ar", "16000", "-ac", "1"]},
        "socket_timeout": 7.0, "retries": 0, "fragment_retries": 0, "extractor_retries": 0,
        "noplaylist": True, "quiet": True, "no_warnings": True, "noprogress": True,
        "enable_file_urls": False, "cachedir": False}
    # no section: yt-dlp downloads the whole file; a run that leaves no WAV is an error
    (tmp_path / "dl.wav").unlink()
    _Downloader.writes = False
    assert crawl._download("https://h/x.m4a", str(tmp_path), [], None, True, 7.0) == ("err", "yt-dlp produced no WAV")
    assert "download_ranges" not in _Downloader.seen[-1] and _Downloader.seen[-1]["enable_file_urls"] is True
    # an exception without a message: yt-dlp's last logged error, without its "ERROR: "
    _Downloader.raises = yt_dlp.utils.DownloadError("")
    assert crawl._download("https://h/x.m4a", str(tmp_path), [], None, False, 7.0) == ("err", "[generic] gone for good")


def test_crawl_results_whole(served, tmp_path):
    from extractors.crawl import CrawlResult
    for url, why in (("", "no URL"), ("ftp://127.0.0.1/x.mp4", "URL scheme 'ftp' is not crawled (http/https only)"),
                     ("clip.mp4", "URL scheme '(none)' is not crawled (http/https only)")):
        assert crawl_audio(url, 0, 1, tmp_path / "y.wav") == CrawlResult(url, "failed", error=why,
                                                                         error_class="permanent")
    url, out = f"{served.url}/clip.mp4", tmp_path / "out" / "v.wav"
    out.parent.mkdir()
    out.write_text("not audio")  # a broken earlier result is crawled again
    assert crawl_audio(url, 0.0, 1.0, out, **FAST) == CrawlResult(url, "crawled", path=str(out), attempts=1)
    assert crawl_audio(url, 0.0, 1.0, out, **FAST) == CrawlResult(url, "crawled", path=str(out))  # kept
    assert probe(out).duration == pytest.approx(1.0, abs=0.05)  # a window from 0 is a window
    r = crawl_audio(f"{served.url}/status/503/clip.mp4", 0, 2, tmp_path / "out" / "x.wav", retries=0,
                    backoff_s=0.05, socket_timeout_s=1.0, timeout_s=20.0)
    assert r.attempts == 1 and r.error_class == "transient"  # retries=0: one attempt
    assert sorted(p.name for p in out.parent.iterdir()) == ["v.wav"]  # no work folder left


def test_a_crawler_child_that_dies_is_named_with_its_exit_code():
    from extractors.crawl import _run_attempt
    assert _run_attempt({}, 60) == ("err", "crawler process failed (exit code 1)")  # a job without a url
