"""VATEX as AVIGATE reads it: ``ref_captions.json`` (id -> English captions),
``train_list.txt`` and ``test_list.txt``; clips named ``<id>.<ext>``, downloaded by the
user from YouTube by the window in the id."""
from __future__ import annotations

import os
from pathlib import Path

from extractors.annotations import AnnotationError, Manifest, _read_json
from extractors.datasets._common import (N_VAL, VIDEO_DIR, YOUTUBE_URL, annotation_file, build_manifest,
                                         data_root, disjoint_splits, hold_out, locate_videos, non_empty_text,
                                         read_split_lists, youtube_source)
from extractors.datasets._sample import make_clip, make_source, sample_folder, write_json, write_lines, youtube_like_ids
from extractors.datasets.registry import register_dataset

CAPTIONS = "ref_captions.json"
LISTS = {"train": "train_list.txt", "test": "test_list.txt"}


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


@register_dataset("vatex", title="VATEX", write_sample=write_sample, protocol="multi", audio="youtube",
                  evaluated="test_list.txt")
def read_vatex(root: str | os.PathLike, *, n_val: int = N_VAL, seed: int = 0, video_dir: str = VIDEO_DIR,
               youtube_url: str = YOUTUBE_URL) -> Manifest:
    """Every caption of every listed clip. AVIGATE validates on the test list; here ``n_val``
    training clips (seeded) are held out instead. Clips are looked up by file stem."""
    root = data_root(root)
    cap_path = annotation_file(root, CAPTIONS, "VATEX")
    lists = read_split_lists(root, LISTS, "VATEX")
    split = disjoint_splits(lists)
    data = _read_json(cap_path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{cap_path}: top level is not an object of id -> captions")
    captions = {}
    for path, ids in lists.values():
        for vid, line in ids.items():
            caps = data.get(vid)
            if not isinstance(caps, list) or not caps:
                raise AnnotationError(f"{path}: line {line}: video {vid!r} has no captions in {CAPTIONS}")
            captions[vid] = [non_empty_text(c, f"{cap_path}: {vid!r}[{k}]").strip() for k, c in enumerate(caps)]
    for vid in hold_out(lists["train"][1], n_val, seed):
        split[vid] = "val"
    ids = list(split)
    return build_manifest("vatex", root, ids, split,
                          locate_videos(root, ids, expected=lambda v: f"{video_dir}/{v}.mp4", video_dir=video_dir),
                          captions, [youtube_source(v, youtube_url, windowed=True) for v in ids])
