"""Charades as AVIGATE reads it: ``Charades_v1_{train,test}.csv`` (quoted CSV, one row per
video, the text is the ``script`` the actors were given); videos ``<id>.mp4``, else ``.webm``."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from extractors.annotations import AnnotationError, Manifest, _csv_rows, validate_video_id
from extractors.datasets._common import (N_VAL, VIDEO_DIR, annotation_file, build_manifest, count_warning,
                                         data_root, disjoint_splits, hold_out, locate_videos)
from extractors.datasets.registry import register_dataset
from extractors.datasets._sample import make_clip, sample_folder

FILES = {"train": "Charades_v1_train.csv", "test": "Charades_v1_test.csv"}
COLUMNS = ("id", "subject", "scene", "quality", "relevance", "verified", "script", "objects", "descriptions",
           "actions", "length")
ROOMS = ("Kitchen", "Bedroom", "Living room", "Garage")


def write_sample(out: str | os.PathLike, *, seed: int = 0) -> Path:
    """6 train and 2 test home videos with their own sound; scripts of two sentences with
    commas (quoted cells)."""
    out, rng = sample_folder(out, seed)
    rows = {s: [] for s in FILES}
    for k, split in enumerate(["train"] * 6 + ["test"] * 2):
        vid = "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), size=5))
        clip = make_clip(out / VIDEO_DIR / f"{vid}.mp4", rng, audio=True)
        first, second = clip.captions(2, offset=k)
        rows[split].append([vid, f"S{k:02d}", ROOMS[k % len(ROOMS)], "6", "7", "Yes",
                            f"A person watches {first}. Then, {second}.", "screen;sofa",
                            f"Someone looks at {clip.scene}.", f"c{100 + k:03d} 0.0 2.0", "2.0"])
    for split, name in FILES.items():
        with open(out / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
            w.writerow(COLUMNS)
            w.writerows(rows[split])
    return out


def _scripts(path: Path) -> tuple[dict[str, str], list[str]]:
    """(script of each video, warnings): a row with an empty script or a bad id is left
    out, with one warning for the file."""
    out: dict[str, str] = {}
    bad = []
    for line, row in _csv_rows(path, ("id", "script")):
        try:
            vid = validate_video_id(row["id"].strip(), "field 'id'")
            if not row["script"].strip():
                raise AnnotationError(f"video {vid!r}: field 'script' is empty")
            if vid in out:
                raise AnnotationError(f"field 'id': video {vid!r} listed twice")
        except AnnotationError as e:
            bad.append(f"line {line}: {e}")
            continue
        out[vid] = row["script"].strip()
    return out, count_warning(bad, "row(s) left out", path)


@register_dataset("charades", title="Charades", write_sample=write_sample, protocol="single", audio="own",
                  evaluated=FILES["test"])
def read_charades(root: str | os.PathLike, *, n_val: int = N_VAL, seed: int = 0,
                  video_dir: str = VIDEO_DIR) -> Manifest:
    """One script per video; ``n_val`` training videos (seeded) are held out for
    validation. Videos are looked up by file stem, ``.mp4`` before ``.webm``."""
    root = data_root(root)
    scripts: dict[str, str] = {}
    lists, warnings = {}, []
    for split, name in FILES.items():
        path = annotation_file(root, name, "Charades")
        part, warned = _scripts(path)
        warnings += warned
        scripts.update(part)
        lists[split] = (path, list(part))
    split = disjoint_splits(lists)
    for vid in hold_out(lists["train"][1], n_val, seed):
        split[vid] = "val"
    ids = list(split)
    paths, duplicates = locate_videos(root, ids, video_dir=video_dir, expected=lambda v: f"{video_dir}/{v}.mp4")
    return build_manifest("charades", root, ids, split, paths, {v: [scripts[v]] for v in ids},
                          warnings=warnings + duplicates, n_val=n_val)
