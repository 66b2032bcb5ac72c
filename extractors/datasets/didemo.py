"""DiDeMo as CLIP4Clip reads it: ``{train,val,test}_data.json`` (moments: description,
Flickr file name, annotators' times) and ``{train,val,test}_list.txt``; one paragraph per
video; the id is the whole file name, extension included."""
from __future__ import annotations

import os
from pathlib import Path

from extractors.annotations import AnnotationError, Manifest, validate_video_id
from extractors.datasets._common import (VIDEO_DIR, annotation_file, build_manifest, count_warning, data_root,
                                         disjoint_splits, locate_videos, non_empty_text, read_json_list,
                                         read_split_lists, val_from_list)
from extractors.datasets._sample import make_clip, sample_folder, write_json, write_lines
from extractors.datasets.registry import register_dataset

SPLITS = ("train", "val", "test")
# Flickr keeps each upload's own container; the sample uses several, as the release does.
_SAMPLE_EXTS = (".mov", ".mp4", ".avi", ".m4v")


def write_sample(out: str | os.PathLike, *, seed: int = 0) -> Path:
    """4 train, 2 val and 2 test videos of 3 s with 2 or 3 moments each; Flickr-style names
    with their original extensions; half the videos carry audio. ``download_link`` is empty (the
    sample points nowhere off the machine)."""
    out, rng = sample_folder(out, seed)
    moments, names = {s: [] for s in SPLITS}, {s: [] for s in SPLITS}
    for k, split in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2):
        name = (f"{int(rng.integers(10**7, 10**8))}@N0{k % 9}_{int(rng.integers(10**9, 10**10))}_"
                f"{rng.bytes(4).hex()}{_SAMPLE_EXTS[k % len(_SAMPLE_EXTS)]}")
        clip = make_clip(out / VIDEO_DIR / name, rng, audio=k % 2 == 0, seconds=3.0)
        for j, text in enumerate(clip.captions(2 + k % 2, offset=k)):
            moments[split].append({"annotation_id": 100 * k + j, "description": text, "video": name,
                                   "times": [[j, j], [j, j + 1], [j, j], [max(0, j - 1), j]],
                                   "download_link": "", "num_segments": 6})
        names[split].append(name)
    for split in SPLITS:
        write_json(out / f"{split}_data.json", moments[split])
        write_lines(out / f"{split}_list.txt", names[split])
    return out


def _descriptions(path: Path) -> tuple[dict[str, list[str]], list[str]]:
    """(each video's descriptions in file order, warnings): a moment without a usable
    ``video`` or ``description`` is skipped with one warning per file. Other fields
    (``times``, ``download_link``, ...) are not read."""
    data = read_json_list(path, "moments")
    out: dict[str, list[str]] = {}
    bad = []
    for k, m in enumerate(data):
        try:
            if not isinstance(m, dict):
                raise AnnotationError("not an object")
            for key in ("video", "description"):
                non_empty_text(m.get(key), f"field {key!r}")
            vid = validate_video_id(m["video"], "field 'video'")
        except AnnotationError as e:
            bad.append(f"[{k}] {e}")
            continue
        out.setdefault(vid, []).append(m["description"])
    return out, count_warning(bad, "moment(s) skipped", path)


@register_dataset("didemo", title="DiDeMo", write_sample=write_sample, protocol="paragraph", audio="own",
                  evaluated="test_list.txt", n_frames=64, n_words=64, max_seconds=31.0)
def read_didemo(root: str | os.PathLike, *, n_val: int | None = None, seed: int = 0,
                video_dir: str = VIDEO_DIR) -> Manifest:
    """Listed and annotated videos (CLIP4Clip also drops those without a file; here they
    stay, to fail in the flow). The paragraph joins a video's descriptions with single
    spaces, in file order. A file is found by its whole name (the id), as ``<id>.<ext>``
    (the download script saves ``<name>.mp4``) or as the id with another extension.
    ``n_val``: how many of val_list's videos validate (seeded; default all, 0 none)."""
    root = data_root(root)
    lists = read_split_lists(root, {s: f"{s}_list.txt" for s in SPLITS}, "DiDeMo")
    captions: dict[str, list[str]] = {}
    warnings = []
    for s in SPLITS:
        descriptions, warned = _descriptions(annotation_file(root, f"{s}_data.json", "DiDeMo"))
        warnings += warned
        kept = [v for v in lists[s][1] if v in descriptions]
        warnings += count_warning([v for v in lists[s][1] if v not in descriptions],
                                  f"listed video(s) have no description in {s}_data.json (left out)", lists[s][0])
        captions.update({v: [" ".join(descriptions[v])] for v in kept})
        lists[s] = (lists[s][0], kept)
    lists["val"] = (lists["val"][0], [v for v in lists["val"][1] if v in val_from_list(lists["val"][1], n_val, seed)])
    split = disjoint_splits(lists)
    ids = list(split)
    paths, duplicates = locate_videos(root, ids, video_dir=video_dir, expected=lambda v: f"{video_dir}/{v}",
                                      by_name=True, aliases=lambda v: [v, os.path.splitext(v)[0]])
    return build_manifest("didemo", root, ids, split, paths, captions, warnings=warnings + duplicates, n_val=n_val)
