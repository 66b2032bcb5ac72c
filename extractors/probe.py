"""What a media file holds, from ffprobe; and the bounded way every ffmpeg tool is run."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import asdict, dataclass
from fractions import Fraction

from extractors.errors import MediaError
from extractors.workers import tool_preexec


@dataclass
class ProbeResult:
    path: str
    duration: float          # seconds (container, else longest stream)
    fps: float               # average frame rate of the first video stream (0 if none)
    width: int               # display size: after rotation
    height: int
    rotation: int            # clockwise degrees a player applies: 0, 90, 180 or 270
    has_video: bool
    has_audio: bool
    n_frames: int            # container's frame count, else duration * fps (an estimate)
    codec: str               # video codec name ("" if no video)
    variable_frame_rate: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def ffmpeg_path(path: str | os.PathLike) -> str:
    """An argument ffmpeg cannot mistake for an option or a protocol (``-x.mp4``, ``a:b``)."""
    return os.path.abspath(os.fspath(path))


def tool_cause(stderr: bytes, arg: str) -> str:
    """The last line of ffmpeg/ffprobe stderr (their verdict), without the input path the
    tool puts in front of it."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last[len(arg) + 2:] if last.startswith(f"{arg}: ") else last


def run_tool(cmd: list[str], path: str | os.PathLike, arg: str, timeout_s: float) -> bytes:
    """Run an ffmpeg-family command and return its stdout. ``MediaError(path, ...)`` naming
    the tool and its own message when it fails, or that it was killed at ``timeout_s``
    (a stalled input: a FIFO nobody writes, a network mount that hangs)."""
    tool = os.path.basename(cmd[0])
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s,
                             preexec_fn=tool_preexec())
    except subprocess.TimeoutExpired:  # run() has killed and reaped it
        raise MediaError(path, f"{tool} timed out after {timeout_s:g} s") from None
    if res.returncode != 0:
        cause = tool_cause(res.stderr, arg) or f"exit code {res.returncode}"
        raise MediaError(path, f"{tool}: {cause}")
    return res.stdout


def _rate(s: str | None) -> float:
    try:
        r = Fraction(s or "0")
        return float(r) if r.denominator else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0


def _rotation(stream: dict) -> int:
    # ffmpeg >= 5 reports a display matrix (counter-clockwise degrees, e.g. -90 for a phone
    # held upright); older muxers wrote a clockwise "rotate" tag.
    for sd in stream.get("side_data_list", []) or []:
        if "rotation" in sd:
            return int(round(-float(sd["rotation"]))) % 360
    tag = (stream.get("tags") or {}).get("rotate")
    if tag is not None:
        try:
            return int(round(float(tag))) % 360
        except ValueError:
            return 0
    return 0


def probe(path: str | os.PathLike, timeout_s: float = 60.0) -> ProbeResult:
    """Raises ``MediaError`` for missing, empty or unreadable files, for files with neither
    a video nor an audio stream, and when ffprobe runs past ``timeout_s``."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise MediaError(p, "no such file") from None
    except OSError as e:
        raise MediaError(p, e.strerror or str(e)) from None
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(p, "is a directory, not a media file")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise MediaError(p, "empty file (0 bytes)")
    arg = ffmpeg_path(p)
    out = run_tool(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", arg],
                   p, arg, timeout_s)
    try:
        info = json.loads(out.decode("utf-8", "replace"))
    except ValueError:
        raise MediaError(p, "ffprobe: unreadable JSON output") from None
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not (s.get("disposition") or {}).get("attached_pic")), None)
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    if video is None and not has_audio:
        raise MediaError(p, "no video or audio stream (not a media file?)")
    fmt = info.get("format", {})
    durations = [_rate(fmt.get("duration"))] + [_rate(s.get("duration")) for s in streams]
    duration = durations[0] or max(durations)
    if video is None:
        return ProbeResult(p, duration, 0.0, 0, 0, 0, False, has_audio, 0, "")
    avg, real = _rate(video.get("avg_frame_rate")), _rate(video.get("r_frame_rate"))
    fps = avg or real
    rot = _rotation(video)
    w, h = int(video.get("width") or 0), int(video.get("height") or 0)
    if rot in (90, 270):
        w, h = h, w
    try:
        n = int(video.get("nb_frames") or 0)
    except ValueError:
        n = 0
    vdur = _rate(video.get("duration")) or duration
    if n <= 0:
        n = int(round(vdur * fps))
    vfr = bool(avg and real and abs(avg - real) > 0.01 * real)
    return ProbeResult(p, duration, fps, w, h, rot, True, has_audio, n,
                       str(video.get("codec_name", "")), vfr)
