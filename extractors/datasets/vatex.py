"""VATEX as AVIGATE reads it: ``ref_captions.json`` (id -> English captions),
``train_list.txt`` and ``test_list.txt``; or as the dataset ships it:
``vatex_training_v1.0.json`` / ``vatex_validation_v1.0.json``. Clips named ``<id>.<ext>``,
downloaded by the user from YouTube by the window in the id."""
from __future__ import annotations

import os
from pathlib import Path

from extractors.annotations import AnnotationError, Manifest, _read_json, validate_video_id
from extractors.datasets._common import (N_VAL, VIDEO_DIR, YOUTUBE_URL, annotation_file, build_manifest,
                                         count_warning, data_root, disjoint_splits, hold_out, locate_videos,
                                         read_id_list, read_json_list, read_split_lists, youtube_source)
from extractors.datasets._sample import make_clip, make_source, sample_folder, write_json, write_lines, youtube_like_ids
from extractors.datasets.registry import register_dataset

CAPTIONS = "ref_captions.json"
LISTS = {"train": "train_list.txt", "test": "test_list.txt"}
# The dataset's own files: a list of {"videoID": "<youtube id>_<6-digit start>_<6-digit end>",
# "enCap": [10 English captions], "chCap": [10 Chinese]}.
OFFICIAL = {"train": "vatex_training_v1.0.json", "val": "vatex_validation_v1.0.json"}


def write_sample(out: str | os.PathLike, *, seed: int = 0) -> Path:
    """6 train and 2 test clips, 5 captions each; every other clip has no audio track;
    a stand-in original per silent clip for the crawl (see ``_sample.SOURCES_DIR``)."""
    out, rng = sample_folder(out, seed)
    ids, captions = [], {}
    for k, yt in enumerate(youtube_like_ids(8, rng)):
        start = int(rng.integers(0, 10))
        vid = f"{yt}_{start:06d}_{start + 10:06d}"
        clip = make_clip(out / VIDEO_DIR / f"{vid}.mp4", rng, audio=k % 2 == 1)
        if clip.sound is None:
            make_source(out, yt, start + 11, rng)
        captions[vid] = clip.captions(5, offset=k)
        ids.append(vid)
    write_json(out / CAPTIONS, captions)
    write_lines(out / LISTS["train"], ids[:6])
    write_lines(out / LISTS["test"], ids[6:])
    return out


def _official(path: Path) -> tuple[dict[str, list[str]], list[str]]:
    """(English captions by ``videoID``, warnings) of an official file: a list of
    ``{"videoID", "enCap": [10 captions], "chCap": [...]}``. An entry without an id or
    English captions, and each empty caption, is skipped with one warning for the file."""
    data = read_json_list(path, "{videoID, enCap} entries")
    out: dict[str, list[str]] = {}
    bad = []
    for k, entry in enumerate(data):
        vid = entry.get("videoID") if isinstance(entry, dict) else None
        caps = entry.get("enCap") if isinstance(entry, dict) else None
        try:
            validate_video_id(vid, "field 'videoID'")
        except AnnotationError as e:
            bad.append(f"[{k}] {e}")
            continue
        if not isinstance(caps, list):
            bad.append(f"[{k}] {vid!r}: field 'enCap' is not a list")
            continue
        kept = [c.strip() for c in caps if isinstance(c, str) and c.strip()]
        if len(kept) < len(caps):
            bad.append(f"[{k}] {vid!r}: {len(caps) - len(kept)} empty caption(s)")
        out[vid] = kept
    return out, count_warning(bad, "problem(s) in entries (skipped)", path)


def _derived(path: Path) -> tuple[dict[str, list[str]], list[str]]:
    """(captions by id, warnings) of ``ref_captions.json``; a caption that is not a
    non-empty string is dropped with one warning for the file."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: top level is not an object of id -> captions")
    out, bad = {}, []
    for vid, caps in data.items():
        caps = caps if isinstance(caps, list) else [caps]
        out[vid] = [c.strip() for c in caps if isinstance(c, str) and c.strip()]
        bad += [f"{vid!r}[{k}] ({c!r})" for k, c in enumerate(caps) if not (isinstance(c, str) and c.strip())]
    return out, count_warning(bad, "caption(s) dropped", path)


def _optional_list(root: Path, name: str) -> tuple[Path, list[str]] | None:
    path = root / name
    return (path, list(read_id_list(path))) if path.is_file() else None


@register_dataset("vatex", title="VATEX", write_sample=write_sample, protocol="multi", audio="youtube",
                  evaluated="test_list.txt")
def read_vatex(root: str | os.PathLike, *, n_val: int = N_VAL, seed: int = 0, video_dir: str = VIDEO_DIR,
               youtube_url: str = YOUTUBE_URL) -> Manifest:
    """Every English caption of every clip, from the official files when the root has them
    (``vatex_training_v1.0.json`` / ``vatex_validation_v1.0.json``), else from AVIGATE's
    derived ``ref_captions.json``. Splits follow AVIGATE (HGR's protocol): train = the
    training file (or ``train_list.txt``: 25,991 clips), test = ``test_list.txt`` (1,500
    clips of the official validation file), or with the official files and no test list
    the whole validation file. AVIGATE validates on the test list; here ``n_val`` training
    clips (seeded) are held out instead. A listed clip without captions is left out (one
    warning). Clips are looked up by file stem."""
    root = data_root(root)
    warnings: list[str] = []
    official = {s: root / name for s, name in OFFICIAL.items()}
    if official["train"].is_file():
        cap_path = official["train"]
        captions, warnings = _official(official["train"])
        val_file, warned = _official(annotation_file(root, OFFICIAL["val"], "VATEX"))
        warnings += warned
        lists = {"train": _optional_list(root, LISTS["train"]) or (official["train"], list(captions)),
                 "test": _optional_list(root, LISTS["test"]) or (official["val"], list(val_file))}
        captions = {**val_file, **captions}
    else:
        cap_path = annotation_file(root, CAPTIONS, "VATEX")
        lists = {s: (p, list(ids)) for s, (p, ids) in read_split_lists(root, LISTS, "VATEX").items()}
        captions, warnings = _derived(cap_path)
    for name, (path, listed) in list(lists.items()):
        gone = [v for v in listed if not captions.get(v)]
        warnings += count_warning(gone, f"listed clip(s) have no captions in {cap_path.name} (left out)", path)
        lists[name] = (path, [v for v in listed if captions.get(v)])
    split = disjoint_splits(lists)
    for vid in hold_out(lists["train"][1], n_val, seed):
        split[vid] = "val"
    ids = list(split)
    paths, duplicates = locate_videos(root, ids, video_dir=video_dir, expected=lambda v: f"{video_dir}/{v}.mp4")
    return build_manifest("vatex", root, ids, split, paths, captions,
                          [youtube_source(v, youtube_url, windowed=True) for v in ids],
                          warnings=warnings + duplicates, n_val=n_val)
