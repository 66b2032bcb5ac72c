"""Waveform loading: any file ffmpeg reads -> 16 kHz mono float32 in [-1, 1]. A 16-bit PCM
WAV already at the rate and mono (what the crawl step writes) is read directly, without
ffprobe or ffmpeg: the same samples ffmpeg gives (s16 / 32768), one child process less per
file, and the GPU check's machine has no ffmpeg binary."""
from __future__ import annotations

import os

import numpy as np

from extractors.errors import MediaError


def load_audio(path: str | os.PathLike, sr: int = 16000, start: float | None = None,
               end: float | None = None, timeout_s: float = 120.0) -> np.ndarray:
    """Decode the first audio stream, resampled by ffmpeg and piped as f32le (no temporary
    WAV). ``start``/``end`` in seconds cut a section. ``MediaError`` if there is no audio."""
    p = os.fspath(path)
    if start is None and end is None:
        wave = _pcm_wav(p, sr)
        if wave is not None:
            return wave
    import ffmpeg

    from extractors.probe import ffmpeg_path, probe, run_tool

    info = probe(p, timeout_s=timeout_s)
    if not info.has_audio:
        raise MediaError(p, "no audio stream")
    in_kw = {}
    if start is not None and start > 0:
        in_kw["ss"] = float(start)
    if end is not None:
        in_kw["t"] = max(0.0, float(end) - float(start or 0.0))
    arg = ffmpeg_path(p)
    cmd = (ffmpeg.input(arg, **in_kw)
           .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=int(sr), map="0:a:0")
           .global_args("-nostdin", "-v", "error")
           .compile())
    wave = np.frombuffer(run_tool(cmd, p, arg, timeout_s), dtype=np.float32)
    if wave.size == 0:
        raise MediaError(p, "audio stream decodes to no samples")
    return np.clip(wave, -1.0, 1.0)


def _pcm_wav(path: str, sr: int) -> np.ndarray | None:
    """The samples of a 16-bit mono PCM WAV at ``sr`` Hz; None for any other file (ffmpeg
    then decodes it, and names the cause if it cannot)."""
    import wave

    if not path.lower().endswith(".wav"):
        return None
    try:
        with wave.open(path, "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype()) != (sr, 1, 2, "NONE"):
                return None
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error):
        return None
    if len(raw) < 2:
        return None
    return np.frombuffer(raw[:len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
