"""What a media file holds, from ffprobe (through ffmpeg-python)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from fractions import Fraction

from extractors.errors import MediaError


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


def probe(path: str | os.PathLike) -> ProbeResult:
    """Raises ``MediaError`` for missing, empty or unreadable files and for files with
    neither a video nor an audio stream."""
    import ffmpeg

    p = os.fspath(path)
    if not os.path.exists(p):
        raise MediaError(p, "no such file")
    if os.path.isdir(p):
        raise MediaError(p, "is a directory, not a media file")
    if os.path.getsize(p) == 0:
        raise MediaError(p, "empty file (0 bytes)")
    try:
        info = ffmpeg.probe(ffmpeg_path(p))
    except ffmpeg.Error as e:
        err = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise MediaError(p, f"ffprobe: {err[-1] if err else 'failed'}") from None
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
