"""MSVD as CLIP4Clip reads it: ``raw-captions.pkl`` (id -> captions, each a list of words)
and ``{train,val,test}_list.txt``; clips named ``<id>.avi``, silent, ids carrying their
YouTube id and window."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

from extractors.annotations import AnnotationError, Manifest
from extractors.datasets._common import (VIDEO_DIR, YOUTUBE_URL, annotation_file, build_manifest, count_warning,
                                         data_root, disjoint_splits, locate_videos, read_split_lists, val_from_list,
                                         youtube_source)
from extractors.datasets._sample import make_clip, make_source, sample_folder, write_lines, youtube_like_ids
from extractors.datasets.registry import register_dataset

CAPTIONS = "raw-captions.pkl"
LISTS = {"train": "train_list.txt", "val": "val_list.txt", "test": "test_list.txt"}


# What a caption pickle may name besides plain dicts, lists and strings: the releases'
# files were written from a defaultdict(list) or an OrderedDict. Anything else is refused,
# so a crafted pickle cannot run code.
_ALLOWED = {("collections", "defaultdict"), ("collections", "OrderedDict"), ("builtins", "list"),
            ("builtins", "dict"), ("builtins", "str"), ("builtins", "tuple")}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_captions(path: Path) -> tuple[dict[str, list[str]], list[str]]:
    """(captions of each id, warnings): a caption that is not a list of words, or is empty,
    is dropped with one warning for the file."""
    try:
        with open(path, "rb") as f:
            data = _PlainUnpickler(f, encoding="utf-8").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a malformed file
        raise AnnotationError(f"{path}: not a pickled dict of captions ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: top level is a {type(data).__name__}, not a dict of id -> captions")
    out, bad = {}, []
    for vid, caps in data.items():
        if not isinstance(caps, (list, tuple)):
            bad.append(f"{vid!r} (captions are not a list)")
            continue
        kept = []
        for k, words in enumerate(caps):
            if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
                bad.append(f"{vid!r}[{k}] (not a list of words)")
            elif not " ".join(words).strip():
                bad.append(f"{vid!r}[{k}] (empty)")
            else:
                kept.append(" ".join(words))
        out[str(vid)] = kept
    return out, count_warning(bad, "caption(s) dropped", path)


def write_sample(out: str | os.PathLike, *, seed: int = 0) -> Path:
    """4 train, 2 val and 2 test clips, silent as MSVD's are, with 3 to 5 captions each,
    and a stand-in original per clip for the crawl (see ``_sample.SOURCES_DIR``)."""
    out, rng = sample_folder(out, seed)
    ids, captions = [], {}
    for k, yt in enumerate(youtube_like_ids(8, rng)):
        start = int(rng.integers(0, 10))
        vid = f"{yt}_{start}_{start + 2}"
        make_source(out, yt, start + 3, rng)
        clip = make_clip(out / VIDEO_DIR / f"{vid}.avi", rng, audio=False)
        captions[vid] = [c.split() for c in clip.captions(3 + k % 3, offset=k)]
        ids.append(vid)
    with open(out / CAPTIONS, "wb") as f:
        pickle.dump(captions, f, protocol=4)
    for split, (a, b) in zip(LISTS, [(0, 4), (4, 6), (6, 8)]):
        write_lines(out / LISTS[split], ids[a:b])
    return out


@register_dataset("msvd", title="MSVD", write_sample=write_sample, protocol="multi", audio="youtube",
                  evaluated="test_list.txt")
def read_msvd(root: str | os.PathLike, *, n_val: int | None = None, seed: int = 0, video_dir: str = VIDEO_DIR,
              youtube_url: str = YOUTUBE_URL) -> Manifest:
    """Every caption of every listed clip; clips looked up by file stem under ``video_dir``.
    A listed clip without captions is left out (one warning). ``n_val``: how many of
    val_list's clips validate (seeded; default all, 0 none). ``youtube_url`` (with ``{id}``)
    is where the crawl fetches a silent clip's window."""
    root = data_root(root)
    cap_path = annotation_file(root, CAPTIONS, "MSVD")
    lists = read_split_lists(root, LISTS, "MSVD")
    captions, warnings = _read_captions(cap_path)
    for name, (path, listed) in list(lists.items()):
        gone = [v for v in listed if not captions.get(v)]
        warnings += count_warning(gone, f"listed clip(s) have no captions in {CAPTIONS} (left out)", path)
        keep = val_from_list([v for v in listed if v not in gone], n_val, seed) if name == "val" else None
        lists[name] = (path, [v for v in listed if v not in gone and (keep is None or v in keep)])
    split = disjoint_splits(lists)
    ids = list(split)
    paths, duplicates = locate_videos(root, ids, video_dir=video_dir, expected=lambda v: f"{video_dir}/{v}.avi")
    return build_manifest("msvd", root, ids, split, paths, captions,
                          [youtube_source(v, youtube_url, windowed=True) for v in ids],
                          warnings=warnings + duplicates, n_val=n_val)
