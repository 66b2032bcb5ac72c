"""Finding each video's file, one way for every dataset: a recursive search of the video
folder by file stem (the name minus its last extension), with a stated preference when one
id has several files. Readers name their aliases (ActivityNet's optional ``v_``) and whether
the whole file name is an id too (DiDeMo's ids carry their extension)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from extractors.annotations import AnnotationError

# Best first; any other extension ranks after these (the reference loaders take whatever
# the walk finds last, so a fixed order is ours).
PREFERENCE = (".mp4", ".webm", ".mkv", ".avi", ".mov")


@dataclass
class VideoIndex:
    """Files under one folder (paths relative to the data root), by stem and by name."""

    by_stem: dict[str, list[str]] = field(default_factory=dict)
    by_name: dict[str, list[str]] = field(default_factory=dict)


def index_videos(root: Path, video_dir: str) -> VideoIndex:
    """Files under ``root/video_dir`` (recursive, links followed once); hidden files
    (partial downloads, ``.DS_Store``) are skipped. ``video_dir`` may not leave the root."""
    top = os.path.abspath(root)
    if os.path.isabs(video_dir) or os.path.commonpath([top, os.path.abspath(root / video_dir)]) != top:
        raise AnnotationError(f"{root}: video_dir {video_dir!r} leaves the data root (link the videos in instead)")
    index = VideoIndex()
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root / video_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop, or two links to one folder
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            index.by_stem.setdefault(os.path.splitext(f)[0], []).append(rel)
            index.by_name.setdefault(f, []).append(rel)
    return index


def _rank(path: str) -> int:
    ext = os.path.splitext(path)[1].lower()
    return PREFERENCE.index(ext) if ext in PREFERENCE else len(PREFERENCE)


def locate_videos(root: Path, ids: Iterable[str], *, video_dir: str, expected: Callable[[str], str],
                  aliases: Callable[[str], list[str]] = lambda v: [v], by_name: bool = False,
                  ) -> tuple[list[str], list[str]]:
    """(the file of each id, warnings). Candidates are files whose stem is the id or one of
    its ``aliases``, and with ``by_name`` files whose whole name is the id. Several
    candidates: the one of the best extension in ``PREFERENCE`` (ties: the first walked),
    with one warning naming all of them. An id without a file keeps ``expected(id)`` and
    fails later, in the flow, as a failed item."""
    index = index_videos(root, video_dir)
    paths, warnings = [], []
    for vid in ids:
        files = list(dict.fromkeys([*(index.by_name.get(vid, []) if by_name else []),
                                    *(f for a in aliases(vid) for f in index.by_stem.get(a, []))]))
        if not files:
            paths.append(expected(vid))
            continue
        best = min(files, key=_rank)  # min keeps the first of equal rank
        if len(files) > 1:
            warnings.append(f"{root / video_dir}: {len(files)} files for video {vid!r} "
                            f"({', '.join(files)}): using {best}")
        paths.append(best)
    return paths, warnings
