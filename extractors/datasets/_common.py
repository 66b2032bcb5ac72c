"""Pieces every dataset reader shares: annotation files that must exist, id lists, the
validation hold-out, the recursive video lookup, and YouTube URLs built from ids."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np

# hold_out: the readers' seeded validation hold-out, the same as MSR-VTT's and the manifests'
from extractors.annotations import AnnotationError, Manifest, _read_json, hold_out, validate_video_id  # noqa: F401
from extractors.video_lookup import locate_videos  # noqa: F401  (every reader's lookup)

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
                   sources: list[tuple[str, float, float]] | None = None, *,
                   warnings: list[str] = (), n_val: int | None = None) -> Manifest:
    """Videos in ``ids`` order, each followed by its captions in annotation order;
    ``n_val``: the validation size the reader was asked for (recorded in the store)."""
    cap_text, cap_video = [], []
    for i, vid in enumerate(ids):
        cap_text += captions[vid]
        cap_video += [i] * len(captions[vid])
    urls, starts, ends = (list(c) for c in zip(*sources)) if sources else ([], [], [])
    return Manifest(dataset=dataset, root=str(root), video_ids=ids, splits=[split[v] for v in ids],
                    video_paths=paths, caption_text=cap_text, caption_video=cap_video, urls=urls,
                    start_times=starts, end_times=ends, warnings=list(warnings), n_val=n_val)


def read_json_list(path: Path, what: str) -> list:
    """A JSON file whose top level must be a list (``what``: of what, for the error)."""
    data = _read_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: top level is not a list of {what}")
    return data


def val_from_list(val_ids: list[str], n_val: int | None, seed: int) -> set[str]:
    """The validation videos of a dataset that ships a val list: all of it by default,
    else ``n_val`` of them (seeded; 0: none, selection then takes the last epoch)."""
    if n_val is None:
        return set(val_ids)
    k = min(n_val, len(val_ids))
    return set(np.random.default_rng(seed).choice(sorted(val_ids), size=k, replace=False).tolist())


def count_warning(items: list[str], what: str, where: Path | str) -> list[str]:
    """One warning for many items of one kind (``what``: "listed id(s) have no annotation
    ..."), naming the first few; none when ``items`` is empty."""
    if not items:
        return []
    shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
    return [f"{where}: {len(items)} {what}: {shown}"]


def non_empty_text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AnnotationError(f"{where}: not a non-empty string ({value!r})")
    return value
