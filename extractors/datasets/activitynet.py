"""ActivityNet Captions as CLIP4Clip reads it: ``train.json`` / ``val_1.json`` keyed by
``v_`` + YouTube id, ``train_ids.json`` / ``val_ids.json`` listing those keys; one paragraph
per video; files named ``<id without v_>.<ext>``."""
from __future__ import annotations

import os
from pathlib import Path

from extractors.annotations import AnnotationError, Manifest, _read_json, validate_video_id
from extractors.datasets._common import (N_VAL, VIDEO_DIR, YOUTUBE_URL, annotation_file, build_manifest,
                                         count_warning, data_root, disjoint_splits, hold_out, locate_videos,
                                         youtube_source)
from extractors.datasets._sample import make_clip, make_source, sample_folder, write_json, youtube_like_ids
from extractors.datasets.registry import register_dataset

# split: (ids file, annotation file). No test split is public: val_1 is the evaluated one.
FILES = {"train": ("train_ids.json", "train.json"), "test": ("val_ids.json", "val_1.json")}
PREFIX = "v_"


def paragraph(sentences: list[str]) -> str:
    """The release's paragraph: sentences joined by one space, their own leading spaces kept."""
    return " ".join(sentences)


def write_sample(out: str | os.PathLike, *, seed: int = 0) -> Path:
    """5 train and 3 val_1 videos of 3 s, 2 or 3 sentences each (later ones start with a
    space, as in the release); every third video is silent; a stand-in original per silent
    video for the crawl (see ``_sample.SOURCES_DIR``)."""
    out, rng = sample_folder(out, seed)
    keys, data = [], {}
    for k, yt in enumerate(youtube_like_ids(8, rng)):
        clip = make_clip(out / VIDEO_DIR / f"{yt}.mp4", rng, audio=k % 3 != 0, seconds=3.0)
        if clip.sound is None:
            make_source(out, yt, 3.0, rng)
        n = 2 + k % 2
        sentences = [s.capitalize() + "." if j == 0 else " " + s.capitalize() + "."
                     for j, s in enumerate(clip.captions(n, offset=k))]
        data[PREFIX + yt] = {"duration": 3.0, "timestamps": [[round(3.0 * j / n, 2), round(3.0 * (j + 1) / n, 2)]
                                                             for j in range(n)],
                             "sentences": sentences}
        keys.append(PREFIX + yt)
    for split, part in (("train", keys[:5]), ("test", keys[5:])):
        ids_file, ann_file = FILES[split]
        write_json(out / ids_file, part)
        write_json(out / ann_file, {key: data[key] for key in part})
    return out


def _read_keys(path: Path) -> list[str]:
    keys = _read_json(path)
    if not isinstance(keys, list):
        raise AnnotationError(f"{path}: top level is not a list of video keys")
    seen: dict[str, int] = {}
    for k, key in enumerate(keys):
        if not isinstance(key, str) or not key.startswith(PREFIX):
            raise AnnotationError(f"{path}: item [{k}] {key!r} is not a key starting with {PREFIX!r}")
        validate_video_id(key[len(PREFIX):], f"{path}: item [{k}]")
        if key in seen:
            raise AnnotationError(f"{path}: item [{k}] {key!r} already listed as item [{seen[key]}]")
        seen[key] = k
    return keys


def _read_paragraphs(path: Path, keys: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """(paragraph of each annotated key's id, keys without a usable annotation): the id
    files list more videos than the annotations hold (10,024 / 4,926 against 10,009 /
    4,917), and CLIP4Clip skips those."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: top level is not an object keyed by video")
    out, skipped = {}, []
    for key in keys:
        entry = data.get(key)
        sentences = entry.get("sentences") if isinstance(entry, dict) else None
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences) \
                or not paragraph(sentences).strip():
            skipped.append(key)
            continue
        # a blank sentence among others is kept, as the release joins it too
        out[key[len(PREFIX):]] = [paragraph(sentences)]
    return out, skipped


@register_dataset("activitynet", title="ActivityNet Captions", write_sample=write_sample, protocol="paragraph",
                  audio="youtube", evaluated="val_1.json", n_frames=64, n_words=64)
def read_activitynet(root: str | os.PathLike, *, n_val: int = N_VAL, seed: int = 0,
                     video_dir: str = VIDEO_DIR, youtube_url: str = YOUTUBE_URL) -> Manifest:
    """One paragraph per video; val_1 becomes the test split and ``n_val`` training videos
    (seeded) are held out for validation. Listed ids without an annotation are left out
    (one warning). Video ids drop the ``v_``; files are found as ``<id>.<ext>``
    or ``v_<id>.<ext>``. The crawl fetches the whole video's audio."""
    root = data_root(root)
    files = {split: (annotation_file(root, ids_name, "ActivityNet Captions"),
                     annotation_file(root, ann_name, "ActivityNet Captions"))
             for split, (ids_name, ann_name) in FILES.items()}
    captions, lists, skipped = {}, {}, []
    for split, (ids_path, ann_path) in files.items():
        keys = _read_keys(ids_path)
        part, missing = _read_paragraphs(ann_path, keys)
        skipped += [f"{ids_path.name}:{key}" for key in missing]
        captions.update(part)
        lists[split] = (ids_path, [key[len(PREFIX):] for key in keys if key[len(PREFIX):] in part])
    split = disjoint_splits(lists)
    for vid in hold_out(lists["train"][1], n_val, seed):
        split[vid] = "val"
    ids = list(split)
    paths, duplicates = locate_videos(root, ids, video_dir=video_dir, expected=lambda v: f"{video_dir}/{v}.mp4",
                                      aliases=lambda v: [v, PREFIX + v])
    annotated = " / ".join(ann.name for _, ann in files.values())
    warnings = count_warning(skipped, f"listed id(s) have no usable annotation in {annotated} (left out)", root)
    return build_manifest("activitynet", root, ids, split, paths, captions,
                          [youtube_source(v, youtube_url, windowed=False) for v in ids],
                          warnings=warnings + duplicates, n_val=n_val)
