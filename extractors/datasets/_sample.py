"""Tiny clips and captions for the per-dataset sample writers, made with the MSR-VTT
sample's ffmpeg scenes so captions and videos share content words."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extractors.sample_data import SCENES, SOUNDS, TEMPLATES, _make_video, require_ffmpeg

# Stand-ins for the YouTube originals of the crawlable samples, ``<root>/youtube/<id>.m4a``:
# not part of any real layout; tests serve them over loopback HTTP and read the sample with
# ``youtube_url="http://127.0.0.1:<port>/youtube/{id}.m4a"``, so the crawl never leaves the machine.
SOURCES_DIR = "youtube"
# Small and short: the samples exist so tests and demos run in seconds on 2 cores.
_SIZES = [(64, 48), (48, 64), (80, 48)]


@dataclass(frozen=True)
class Clip:
    scene: str                      # what the captions call the picture
    sound: tuple[str, str] | None   # (short, phrase) when the clip has an audio track

    def captions(self, k: int, offset: int = 0) -> list[str]:
        snd, phrase = self.sound or ("in silence", "nothing can be heard")
        return [TEMPLATES[(offset + j) % len(TEMPLATES)].format(scene=self.scene, sound=snd, sound_phrase=phrase)
                for j in range(k)]


def sample_folder(out: str | os.PathLike, seed: int) -> tuple[Path, np.random.Generator]:
    """The folder a sample writer fills (created) and the generator its choices come from."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out, np.random.default_rng(seed)


def make_clip(path: Path, rng: np.random.Generator, *, audio: bool, seconds: float = 2.0) -> Clip:
    """One clip at ``path`` (container from its extension), written under a temporary name
    first; an existing file is kept, so a rerun only adds what is missing."""
    source, scene = SCENES[int(rng.integers(len(SCENES)))]
    w, h = _SIZES[int(rng.integers(len(_SIZES)))]
    kind, short, phrase = SOUNDS[int(rng.integers(len(SOUNDS)))]
    freq = float(rng.integers(200, 2000))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # absolute, so ffmpeg never reads a name starting with '-' as an option
        tmp = path.absolute().with_name(f".{path.stem}.partial{path.suffix}")
        _make_video(tmp, source, w, h, "10", seconds, (kind, freq) if audio else None)
        os.replace(tmp, path)
    return Clip(scene, (short, phrase) if audio else None)


def make_source(root: Path, youtube_id: str, seconds: float, rng: np.random.Generator) -> Path:
    """The stand-in original of ``youtube_id``: a tone lasting ``seconds``, as AAC with its
    index first (the loopback test server has no Range support)."""
    path = root / SOURCES_DIR / f"{youtube_id}.m4a"
    freq = int(rng.integers(200, 2000))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.absolute().with_name(f".{path.stem}.partial.m4a")
        subprocess.run([require_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={freq}:sample_rate=16000", "-t", f"{seconds:.2f}", "-c:a", "aac",
                        "-ac", "1", "-movflags", "+faststart", "-map_metadata", "-1", "-fflags", "+bitexact",
                        "-flags:a", "+bitexact", str(tmp)], check=True, stdin=subprocess.DEVNULL)
        os.replace(tmp, path)
    return path


def youtube_like_ids(n: int, rng: np.random.Generator) -> list[str]:
    """11-character ids; the first starts with '-' and the second holds a '_', as real
    YouTube ids can."""
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    ids = ["".join(rng.choice(alphabet, size=11)) for _ in range(n)]
    ids[0] = "-" + ids[0][1:]
    if n > 1:
        ids[1] = ids[1][:4] + "_" + ids[1][5:]
    return ids


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
