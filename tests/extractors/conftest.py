"""Media the extractor tests run on, generated once per session with ffmpeg and espeak-ng.

Clips are tiny (small frames, few seconds) so the whole media suite stays fast on 2 cores.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


def _video(path: Path, *, size="160x120", rate=25, dur=4.0, audio=True, src="testsrc2",
           extra=(), faststart=True) -> Path:
    args = ["-f", "lavfi", "-i", f"{src}=size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    args += ["-t", f"{dur}", *extra, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-g", "25"]
    args += ["-c:a", "aac", "-ac", "1"] if audio else ["-an"]
    if faststart:  # the loopback server has no Range support: the moov atom must come first
        args += ["-movflags", "+faststart"]
    ffmpeg(*args, str(path))
    return path


@dataclass
class Media:
    dir: Path
    cfr: Path            # 160x120, 25 fps, 4.2 s, 440 Hz tone
    noaudio: Path        # 160x120, 15 fps, 3 s, no audio
    long: Path           # 20 s at 10 fps: more than 12 one-per-second positions
    portrait: Path       # 120x160 stored, 3 s
    rotated: Path        # stored 160x120 with a 90 degree display rotation (phone video)
    vfr: Path            # 20 frames at 20 fps then 20 frames at 5 fps
    short: Path          # 0.2 s
    tenmin: Path         # 600 s, 32x32 at 1 fps
    audio_only: Path     # .m4a, no video stream
    zero: Path           # 0 bytes
    text: Path           # a text file named .mp4
    truncated: Path      # the first 40 % of an mp4 whose moov atom is at the end
    odd_name: Path       # non-ASCII and spaces in the name
    dash_name: Path      # name starting with '-'
    tone: Path           # 16 kHz WAV, 1 kHz tone, 3 s
    noise: Path          # 44.1 kHz WAV, pink noise, 2.5 s
    speech: Path         # espeak-ng speech (22.05 kHz WAV)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Media:
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is required for the media tests")
    d = tmp_path_factory.mktemp("media")
    cfr = _video(d / "cfr.mp4", dur=4.2)
    noaudio = _video(d / "noaudio.mp4", rate=15, dur=3.0, audio=False, src="testsrc")
    long = _video(d / "long.mp4", size="96x72", rate=10, dur=20.0, audio=False)
    portrait = _video(d / "portrait.mp4", size="120x160", rate=15, dur=3.0)
    rotated = d / "rotated.mp4"
    ffmpeg("-i", str(_video(d / "unrotated.mp4", size="160x120", rate=15, dur=2.0, audio=False)),
           "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    vfr = _video(d / "vfr.mp4", rate=20, dur=2.0, audio=False,
                 extra=("-vf", "setpts='if(lt(N,20),N/(20*TB),1/TB+(N-20)/(5*TB))'", "-fps_mode", "vfr"))
    short = _video(d / "short.mp4", dur=0.2)
    tenmin = _video(d / "tenmin.mp4", size="32x32", rate=1, dur=600.0, audio=False, src="testsrc")
    audio_only = d / "audio_only.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=22050", "-t", "1.5", "-c:a", "aac",
           str(audio_only))
    zero = d / "zero.mp4"
    zero.write_bytes(b"")
    text = d / "text.mp4"
    text.write_text("this is not a video\n" * 20)
    slow = _video(d / "moov_last.mp4", dur=2.0, faststart=False)
    truncated = d / "truncated.mp4"
    truncated.write_bytes(slow.read_bytes()[: int(slow.stat().st_size * 0.4)])
    odd_name = d / "vidéo avec espaces ü.mp4"
    shutil.copy(cfr, odd_name)
    dash_name = d / "-dash.mp4"
    shutil.copy(noaudio, dash_name)
    tone = d / "tone.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=16000", "-t", "3", "-ac", "1", str(tone))
    noise = d / "noise.wav"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.4:sample_rate=44100:seed=3",
           "-t", "2.5", str(noise))
    speech = d / "speech.wav"
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required for the speech fixture")
    subprocess.run(["espeak-ng", "-w", str(speech), "a man is talking about cooking pasta in the kitchen"],
                   check=True)
    return Media(d, cfr, noaudio, long, portrait, rotated, vfr, short, tenmin, audio_only, zero, text,
                 truncated, odd_name, dash_name, tone, noise, speech)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``/stall/...`` sleeps before answering (read timeouts), ``/fail500/...``
    answers 500 (a transient server error), ``/status/NNN/...`` answers NNN; ``hits`` counts
    the GET requests per path."""

    stall_s = 30.0
    hits: dict[str, int] = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        if self.path.startswith("/status/"):
            self.send_error(int(self.path.split("/")[2]))
            return
        if self.path.startswith("/stall"):
            time.sleep(self.stall_s)
            return
        if self.path.startswith("/fail500"):
            self.send_error(500, "server exploded")
            return
        super().do_GET()

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass


@dataclass
class Server:
    url: str
    dir: Path
    hits: dict[str, int] | None = None


@pytest.fixture(scope="session")
def http_server(tmp_path_factory):
    """An http.server on 127.0.0.1 (port 0) in a thread, serving its own folder."""
    root = tmp_path_factory.mktemp("www")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield Server(f"http://127.0.0.1:{srv.server_address[1]}", root, _Handler.hits)
    srv.shutdown()
    srv.server_close()
