"""LSMDC as CLIP4Clip reads it: three tab-separated files without header or quoting, six
fields per line (clip id, aligned start/end, extracted start/end, sentence); clips in
per-movie folders, named ``<clip id>.<ext>``."""
from __future__ import annotations

import os
from pathlib import Path

from extractors.annotations import AnnotationError, Manifest, validate_video_id
from extractors.datasets._common import (VIDEO_DIR, annotation_file, build_manifest, count_warning, data_root,
                                         disjoint_splits, locate_videos, read_text_lines, val_from_list)
from extractors.datasets._sample import make_clip, sample_folder
from extractors.datasets.registry import register_dataset

FILES = {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv",
         "test": "LSMDC16_challenge_1000_publictect.csv"}
FIELDS = ("clip id", "aligned start", "aligned end", "extracted start", "extracted end", "sentence")


def movie_of(clip: str) -> str:
    """``0042_Some_Film_00.01.02.345-00.01.05.678`` -> ``0042_Some_Film`` (its folder)."""
    return clip.rsplit("_", 1)[0]


def write_sample(out: str | os.PathLike, *, seed: int = 0) -> Path:
    """Two invented films: 4 training clips with 2 sentences each, 2 val and 2 test clips
    with one; sentences say SOMEONE and carry literal quotes and commas, as LSMDC's do."""
    out, rng = sample_folder(out, seed)
    films = ["0001_Sample_Film_One", "1002_SAMPLE_FILM_TWO"]
    rows = {s: [] for s in FILES}
    for k, split in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2):
        t = 60.0 * k + float(rng.integers(0, 50))
        a, b = (f"00.{int(x) // 60:02d}.{int(x) % 60:02d}.{int(1000 * (x % 1)):03d}" for x in (t, t + 2.5))
        clip_id = f"{films[k % 2]}_{a}-{b}"
        clip = make_clip(out / VIDEO_DIR / films[k % 2] / f"{clip_id}.avi", rng, audio=True)
        texts = clip.captions(2 if split == "train" else 1, offset=k)
        for j, text in enumerate(texts):
            sentence = f'SOMEONE watches {text}, then says "{"look" if j else "wow"}".'
            rows[split].append("\t".join([clip_id, a, b, a, b, sentence]))
    for split, name in FILES.items():
        (out / name).write_text("".join(r + "\n" for r in rows[split]), encoding="utf-8")
    return out


def _read_tab_file(path: Path) -> tuple[dict[str, list[str]], list[str]]:
    """(sentences of each clip in file order, warnings). Each line is stripped before it is
    split, as CLIP4Clip does (real lines end in spaces or a tab); a line that is still not
    six fields (an empty sentence among them), or has a bad clip id, is skipped with one
    warning per file."""
    out: dict[str, list[str]] = {}
    bad = []
    for n, line in enumerate(read_text_lines(path), 1):
        line = line.strip()
        if not line:
            continue
        cells = line.split("\t")
        try:
            if len(cells) != len(FIELDS):
                raise AnnotationError(f"{len(cells)} tab-separated fields, expected {len(FIELDS)}")
            # the line was stripped, so its last cell (the sentence) is never empty
            clip, sentence = cells[0].strip(), cells[-1].strip()
            validate_video_id(clip, "field 'clip id'")
        except AnnotationError as e:
            bad.append(f"line {n}: {e}")
            continue
        out.setdefault(clip, []).append(sentence)
    return out, count_warning(bad, "line(s) skipped", path)


@register_dataset("lsmdc", title="LSMDC", write_sample=write_sample, protocol="single", audio="own",
                  evaluated=FILES["test"])
def read_lsmdc(root: str | os.PathLike, *, n_val: int | None = None, seed: int = 0,
               video_dir: str = VIDEO_DIR) -> Manifest:
    """Every sentence of every clip (a clip id repeats once per sentence); times are
    ignored, as the releases take whole clips. Clips are looked up by file stem anywhere
    under ``video_dir``; a missing one is expected at ``<movie>/<clip id>.avi``.
    ``n_val``: how many of the val file's clips validate (seeded; default all, 0 none)."""
    root = data_root(root)
    captions: dict[str, list[str]] = {}
    lists, warnings = {}, []
    for split, name in FILES.items():
        path = annotation_file(root, name, "LSMDC")
        sentences, warned = _read_tab_file(path)
        warnings += warned
        captions.update(sentences)
        lists[split] = (path, list(sentences))
    keep = val_from_list(lists["val"][1], n_val, seed)
    lists["val"] = (lists["val"][0], [v for v in lists["val"][1] if v in keep])
    split = disjoint_splits(lists)
    ids = list(split)
    paths, duplicates = locate_videos(root, ids, video_dir=video_dir,
                                      expected=lambda v: f"{video_dir}/{movie_of(v)}/{v}.avi")
    return build_manifest("lsmdc", root, ids, split, paths, captions, warnings=warnings + duplicates, n_val=n_val)
