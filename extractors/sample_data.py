"""A small dataset in the real MSR-VTT layout, made with ffmpeg, for demos and tests.

Each video shows one synthetic "scene" (an ffmpeg test pattern of some colour, moving or
still) and some carry a tone or noise track; captions describe the scene from templates,
so captions and videos share content words (useful once real CLIP weights are used).

About 1 in 3 videos is written without its audio track, as MSR-VTT's silent downloads are.
Their "original" audio (a faint room tone over the whole source clip, of which the video is
the ``start``-``end`` window) is written under ``audio/`` and the annotation URL names it on
a server rooted at the dataset folder (``extractors.sample_server``), so the crawl has
something real to fetch and nothing leaves the machine.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

# (lavfi source, what a caption calls it)
SCENES = [
    ("testsrc2=size={w}x{h}:rate={fps}", "a colourful test pattern with a moving counter"),
    ("mandelbrot=size={w}x{h}:rate={fps}", "a zoom into a glowing fractal"),
    ("life=size={w}x{h}:rate={fps}:seed=1:mold=10:ratio=0.1:death_color=#C83232:life_color=#00ff00", "cells of the game of life growing and dying"),
    ("cellauto=size={w}x{h}:rate={fps}:rule=110:seed=1", "a cellular automaton drawing triangles"),
    ("smptebars=size={w}x{h}:rate={fps}", "broadcast colour bars on a screen"),
    ("rgbtestsrc=size={w}x{h}:rate={fps}", "red green and blue stripes"),
    ("testsrc=size={w}x{h}:rate={fps}", "a test card with a ticking number"),
    ("color=c=navy:size={w}x{h}:rate={fps}", "a still dark blue screen"),
]
SIZES = [(320, 240), (240, 320), (426, 240), (240, 426), (360, 200), (200, 360)]
RATES = ["15", "24", "25", "30000/1001"]
TEMPLATES = [
    "{scene}",
    "a video of {scene}",
    "someone shows {scene}",
    "this clip is about {scene} {sound}",
    "{scene} while {sound_phrase}",
]
SOUNDS = [("sine", "a tone plays", "with a beeping tone"),
          ("anoisesrc", "static hisses", "with hissing noise")]
# the silent videos' original audio cycles through these containers (what the crawl meets)
# at 8 kHz (minutes of source clip each; these encoders are the quick ones)
AUDIO_FORMATS = (("m4a", ["-c:a", "aac", "-b:a", "24k", "-movflags", "+faststart"]),
                 ("ogg", ["-c:a", "libvorbis", "-q:a", "0"]),
                 ("mp3", ["-c:a", "libmp3lame", "-b:a", "24k", "-write_xing", "0"]))
BITEXACT = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
            "-flags:a", "+bitexact"]


def require_ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None or shutil.which("ffprobe") is None:
        raise RuntimeError("ffmpeg/ffprobe not found on PATH: install the Debian package "
                           "`ffmpeg` (make setup does this when run as root)")
    return exe


def _sound_source(kind: str, freq: float) -> str:
    return (f"sine=frequency={freq:.0f}:sample_rate=44100" if kind == "sine"
            else "anoisesrc=color=pink:amplitude=0.3:sample_rate=44100:seed=7")


def _make_video(path: Path, scene: str, w: int, h: int, fps: str, dur: float,
                audio: tuple[str, float] | None) -> None:
    cmd = [require_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", scene.format(w=w, h=h, fps=fps)]
    if audio:
        cmd += ["-f", "lavfi", "-i", _sound_source(*audio)]
    cmd += ["-t", f"{dur:.2f}", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-g", "30", "-bf", "0"]
    cmd += ["-c:a", "aac", "-b:a", "64k", "-ac", "1"] if audio else ["-an"]
    subprocess.run(cmd + BITEXACT + [str(path)], check=True, stdin=subprocess.DEVNULL)


def _make_audio(path: Path, codec_args: list[str], dur: float) -> None:
    # the captions of these videos say nothing can be heard: a faint room tone, not silence
    # (all-zero audio would make every such video's audio features the same)
    room = "anoisesrc=color=brown:amplitude=0.02:sample_rate=8000:seed=3"
    cmd = [require_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", room,
           "-t", f"{dur:.2f}", "-ac", "1", *codec_args]
    subprocess.run(cmd + BITEXACT + [str(path)], check=True, stdin=subprocess.DEVNULL)


def _atomic(target: Path, make) -> None:
    """Run ``make(tmp)`` and rename: an interrupted run leaves no half-written file."""
    if target.exists():
        return
    tmp = target.with_name(f".{target.stem}.partial{target.suffix}")
    make(tmp)
    os.replace(tmp, target)


def make_sample_dataset(out: str | os.PathLike, n_videos: int = 24, seed: int = 0,
                        test_fraction: float = 0.25, captions_per_video: int = 5,
                        progress: bool = False, base_url: str | None = None) -> Path:
    """Write ``videos/all/videoN.mp4``, ``audio/videoN.{m4a,ogg,mp3}`` (the original audio
    of the videos without a track), ``MSRVTT_data.json``, ``MSRVTT_train.9k.csv``,
    ``MSRVTT_train.7k.csv`` and ``MSRVTT_JSFUSION_test.csv`` under ``out``.

    ``base_url`` is where ``out`` is served (``SampleServer(out).url``): a silent video's
    URL is ``{base_url}/audio/...``. Without it silent videos have no URL, and nothing
    is there to crawl. Media files that exist are kept; the annotations are rewritten, so
    a new server port only needs another call.

    Deterministic for a seed and base URL: the same annotation bytes, and the same media
    (ffmpeg runs in bit-exact mode).
    """
    if n_videos < 4:
        raise ValueError("n_videos must be at least 4 (train, validation and test need videos)")
    out = Path(out)
    vdir, adir = out / "videos" / "all", out / "audio"
    vdir.mkdir(parents=True, exist_ok=True)
    adir.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    videos, sentences = [], []
    it = range(n_videos)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="sample videos", unit="video")
    for i in it:
        vid = f"video{i}"
        scene, scene_text = SCENES[int(rng.integers(len(SCENES)))]
        w, h = SIZES[int(rng.integers(len(SIZES)))]
        fps = RATES[int(rng.integers(len(RATES)))]
        dur = float(np.round(rng.uniform(3, 15), 1))
        has_audio = rng.random() > 0.35
        kind, sound, sound_phrase = SOUNDS[int(rng.integers(len(SOUNDS)))]
        freq = float(rng.integers(200, 2000))
        start = float(np.round(rng.uniform(0, 200), 2))
        _atomic(vdir / f"{vid}.mp4", lambda tmp: _make_video(
            tmp, scene, w, h, fps, dur, (kind, freq) if has_audio else None))
        url = ""
        if not has_audio:
            ext, codec_args = AUDIO_FORMATS[i % len(AUDIO_FORMATS)]
            # the whole source clip: the annotated window lies inside it, as on YouTube
            _atomic(adir / f"{vid}.{ext}", lambda tmp: _make_audio(tmp, codec_args, start + dur + 2.0))
            if base_url:
                url = f"{base_url.rstrip('/')}/audio/{vid}.{ext}"
        videos.append({"category": int(rng.integers(20)), "url": url,
                       "video_id": vid, "start time": start, "end time": round(start + dur, 2),
                       "split": "train", "id": i})
        order = rng.permutation(len(TEMPLATES))
        for k in range(captions_per_video):
            t = TEMPLATES[order[k % len(TEMPLATES)]]
            snd = sound if has_audio else "in silence"
            sp = sound_phrase if has_audio else "nothing can be heard"
            sentences.append({"caption": t.format(scene=scene_text, sound=snd, sound_phrase=sp),
                              "video_id": vid, "sen_id": len(sentences)})
    n_test = max(1, int(round(n_videos * test_fraction)))
    test_ids = [v["video_id"] for v in videos[-n_test:]]
    train_ids = [v["video_id"] for v in videos[:-n_test]]
    for v in videos:
        if v["video_id"] in test_ids:
            v["split"] = "test"
    with open(out / "MSRVTT_data.json", "w", encoding="utf-8") as f:
        json.dump({"info": {"description": "vtr sample data (synthetic)", "seed": seed},
                   "videos": videos, "sentences": sentences}, f, indent=1)
    for name, ids in (("MSRVTT_train.9k.csv", train_ids),
                      ("MSRVTT_train.7k.csv", train_ids[: max(1, int(len(train_ids) * 0.78))])):
        with open(out / name, "w", newline="", encoding="utf-8") as f:
            wr = csv.writer(f)
            wr.writerow(["video_id"])
            wr.writerows([v] for v in ids)
    first_caption = {}
    for s in sentences:
        first_caption.setdefault(s["video_id"], s["caption"])
    with open(out / "MSRVTT_JSFUSION_test.csv", "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow(["key", "vid_key", "video_id", "sentence"])
        for k, vid in enumerate(test_ids):
            wr.writerow([f"ret{k}", f"msr{vid[5:]}", vid, first_caption[vid]])
    return out
