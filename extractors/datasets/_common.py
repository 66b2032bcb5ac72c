"""Pieces every dataset reader shares: annotation files that must exist, id lists, the
validation hold-out, the recursive video lookup, and YouTube URLs built from ids."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable, Literal

# hold_out: the readers' seeded validation hold-out, the same as MSR-VTT's and the manifests'
from extractors.annotations import AnnotationError, Manifest, hold_out, validate_video_id  # noqa: F401

N_VAL = 500
VIDEO_DIR = "videos"
YOUTUBE_URL = "https://www.youtube.com/watch?v={id}"
# <11-character YouTube id>_<start>_<end>: MSVD writes seconds as plain integers, VATEX as
# six digits; YouTube ids themselves may hold '_' and '-', hence the fixed length.
_WINDOW_ID = re.compile(r"^(?P<yt>[A-Za-z0-9_-]{11})_(?P<start>\d+(?:\.\d+)?)_(?P<end>\d+(?:\.\d+)?)$")


def data_root(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"{root}: data root does not exist")
    return root


def annotation_file(root: Path, name: str, title: str) -> Path:
    """``root/name``, or a one-line error naming the file the dataset expects."""
    path = root / name
    if not path.is_file():
        raise AnnotationError(f"{root}: no {name} (the {title} annotation file expected there)")
    return path


def read_text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e.reason})") from None


def read_id_list(path: Path) -> dict[str, int]:
    """Line number of each id, one id per line in file order (blank lines skipped); an id
    listed twice is a malformed line."""
    ids: dict[str, int] = {}
    for n, line in enumerate(read_text_lines(path), 1):
        vid = line.strip()
        if not vid:
            continue
        validate_video_id(vid, f"{path}: line {n}")
        if vid in ids:
            raise AnnotationError(f"{path}: line {n}: video id {vid!r} already listed on line {ids[vid]}")
        ids[vid] = n
    return ids


def read_split_lists(root: Path, names: dict[str, str], title: str) -> dict[str, tuple[Path, dict[str, int]]]:
    """``{split: (file, {id: line})}`` of one id list per split, e.g. ``train_list.txt``."""
    paths = {split: annotation_file(root, name, title) for split, name in names.items()}
    return {split: (p, read_id_list(p)) for split, p in paths.items()}


def disjoint_splits(lists: dict[str, tuple[Path, Iterable[str]]]) -> dict[str, str]:
    """Split of each id (in file order) from ``{split: (file, ids)}``; an id in two files
    is an error."""
    split: dict[str, str] = {}
    where: dict[str, Path] = {}
    for name, (path, ids) in lists.items():
        for vid in ids:
            if vid in split:
                raise AnnotationError(f"{path}: video id {vid!r} is also listed in {where[vid].name}")
            split[vid], where[vid] = name, path
    return split


def index_videos(root: Path, video_dir: str, key: Literal["stem", "name"]) -> dict[str, list[str]]:
    """Files under ``root/video_dir`` (recursive, links followed once), keyed by file name
    minus its last extension (``stem``) or by the whole name; paths relative to ``root``.
    Hidden files (partial downloads, ``.DS_Store``) are skipped."""
    top = os.path.abspath(root)
    if os.path.isabs(video_dir) or os.path.commonpath([top, os.path.abspath(root / video_dir)]) != top:
        raise AnnotationError(f"{root}: video_dir {video_dir!r} leaves the data root (link the videos in instead)")
    found: dict[str, list[str]] = {}
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
            k = os.path.splitext(f)[0] if key == "stem" else f
            found.setdefault(k, []).append(os.path.relpath(os.path.join(dirpath, f), root))
    return found


def locate_videos(root: Path, ids: list[str], *, expected: Callable[[str], str],
                  key: Literal["stem", "name"] = "stem", video_dir: str = VIDEO_DIR,
                  prefer: tuple[str, ...] = ()) -> list[str]:
    """The file of each id; an id without one keeps ``expected(id)`` and fails later, in the
    flow, as a failed item. Several files for one id are an error unless ``prefer`` (file
    extensions, best first) picks one: the releases take whichever was walked last."""
    index = index_videos(root, video_dir, key)
    out = []
    for vid in ids:
        files = index.get(vid, [])
        if len(files) > 1:
            rank = [prefer.index(os.path.splitext(f)[1].lower()) if os.path.splitext(f)[1].lower() in prefer
                    else len(prefer) for f in files]
            best = [f for f, r in zip(files, rank) if r == min(rank)]
            if len(best) > 1:
                raise AnnotationError(f"{root / video_dir}: {len(best)} files for video {vid!r} "
                                      f"({best[0]}, {best[1]}): keep one")
            files = best
        out.append(files[0] if files else expected(vid))
    return out


def youtube_source(vid: str, youtube_url: str, *, windowed: bool) -> tuple[str, float, float]:
    """(url, start, end) of an id's YouTube source; start = end = -1 for the whole video.
    A windowed id not of the form ``<youtube id>_<start>_<end>`` has no URL (nothing to crawl)."""
    if not windowed:
        return youtube_url.format(id=vid), -1.0, -1.0
    m = _WINDOW_ID.match(vid)
    if m is None:
        return "", -1.0, -1.0
    return youtube_url.format(id=m["yt"]), float(m["start"]), float(m["end"])


def build_manifest(dataset: str, root: Path, ids: list[str], split: dict[str, str],
                   paths: list[str], captions: dict[str, list[str]],
                   sources: list[tuple[str, float, float]] | None = None) -> Manifest:
    """Videos in ``ids`` order, each followed by its captions in annotation order."""
    cap_text, cap_video = [], []
    for i, vid in enumerate(ids):
        cap_text += captions[vid]
        cap_video += [i] * len(captions[vid])
    urls, starts, ends = (list(c) for c in zip(*sources)) if sources else ([], [], [])
    return Manifest(dataset=dataset, root=str(root), video_ids=ids, splits=[split[v] for v in ids],
                    video_paths=paths, caption_text=cap_text, caption_video=cap_video, urls=urls,
                    start_times=starts, end_times=ends)


def non_empty_text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AnnotationError(f"{where}: not a non-empty string ({value!r})")
    return value
