"""Dataset manifests: MSR-VTT annotations in their distributed formats, and a generic
CSV/JSONL manifest (``video_id, path, caption``) for other datasets."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from storage.info import MIN_VAL_VIDEOS


class AnnotationError(Exception):
    """Malformed annotations; the message names the file, and the line or field."""


TRAIN_LISTS = ("9k", "7k")


def validate_video_id(vid: str, where: str) -> str:
    """Ids become file names: any printable Unicode name that is a valid file name passes;
    refused are only the unsafe ones: empty, ``.``/``..``, dashes alone, a ``..`` after the
    leading dashes, a ``/``, ``\\`` or control character (NUL included), or longer than a
    file name may be. Any number of leading '-' is accepted, as real YouTube ids have them
    (ActivityNet's ``v_---9CpRcKoU``; MSVD, VATEX): subprocesses get full paths, so such a
    name is never read as an option."""
    bare = vid.lstrip("-") if isinstance(vid, str) else ""
    if not isinstance(vid, str) or vid in (".", "..") or not bare or bare.startswith("..") \
            or "/" in vid or "\\" in vid or not vid.isprintable() \
            or len(f"{vid}.mp4".encode("utf-8", "surrogatepass")) > 255:
        raise AnnotationError(f"{where}: video id {vid!r} is not a plain name (rejected)")
    return vid


@dataclass
class Manifest:
    """Videos and captions of one dataset, in a fixed order (the store's order)."""

    dataset: str
    root: str
    video_ids: list[str]
    splits: list[str]
    video_paths: list[str]                       # relative to ``root``
    caption_text: list[str]
    caption_video: list[int]                     # index into video_ids
    urls: list[str] = field(default_factory=list)
    start_times: list[float] = field(default_factory=list)
    end_times: list[float] = field(default_factory=list)
    # What the dataset's registry entry says about retrieval on it (``read_dataset`` fills
    # these): the evaluation protocol, and the frame/word sizes and frame window its
    # releases use (None: the store's defaults, the whole video).
    protocol: str = "single"
    n_frames: int | None = None
    n_words: int | None = None
    max_seconds: float | None = None
    warnings: list[str] = field(default_factory=list)  # inconsistencies let through (one line each)
    # the validation size the reader was asked for (None: the release's own val list);
    # recorded in the store, shown by `vtr store info` and in each training run's config
    n_val: int | None = None

    def __post_init__(self):
        n = len(self.video_ids)
        if not self.urls:
            self.urls = [""] * n
        if not self.start_times:
            self.start_times = [-1.0] * n
        if not self.end_times:
            self.end_times = [-1.0] * n

    @property
    def n_videos(self) -> int:
        return len(self.video_ids)

    def store_kwargs(self) -> dict:
        """Arguments for ``storage.create_store``."""
        return dict(dataset=self.dataset, video_ids=self.video_ids, splits=self.splits,
                    caption_text=self.caption_text, caption_video=self.caption_video,
                    video_paths=self.video_paths, urls=self.urls, start_times=self.start_times,
                    end_times=self.end_times, data_root=self.root, protocol=self.protocol,
                    max_seconds=self.max_seconds)


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e.reason})") from None


def _csv_rows(path: Path, required: tuple[str, ...]):
    """(line number, row dict) of a CSV with a header; names file, line and field on errors."""
    try:
        f = open(path, encoding="utf-8", newline="")
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        reader = csv.DictReader(f, strict=True)
        try:
            fields = reader.fieldnames
            if fields is None:
                raise AnnotationError(f"{path}: line 1: empty file (no header)")
            fields = [c.strip() for c in fields]
            reader.fieldnames = fields
            missing = [c for c in required if c not in fields]
            if missing:
                raise AnnotationError(f"{path}: line 1: no column {missing[0]!r} (columns: {fields})")
            for row in reader:
                if None in row:  # more cells than header columns
                    raise AnnotationError(f"{path}: line {reader.line_num}: {len(fields) + len(row[None])} "
                                          f"fields, header has {len(fields)}")
                for c in required:
                    if row.get(c) is None:
                        raise AnnotationError(f"{path}: line {reader.line_num}: field {c!r} missing")
                yield reader.line_num, row
        except csv.Error as e:
            raise AnnotationError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
        except UnicodeDecodeError as e:
            raise AnnotationError(f"{path}: not UTF-8 text ({e.reason})") from None


def _read_csv_column(path: Path, column: str) -> list[str]:
    out = []
    for line, row in _csv_rows(path, (column,)):
        v = row[column].strip()
        if not v:
            raise AnnotationError(f"{path}: line {line}: empty field {column!r}")
        out.append(validate_video_id(v, f"{path}: line {line}"))
    return out


def _read_test_sentences(path: Path) -> dict[str, str]:
    out = {}
    with open(path, encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), [])
    if "sentence" not in [c.strip() for c in header]:
        return {}
    for line, row in _csv_rows(path, ("video_id", "sentence")):
        if row["sentence"].strip():
            out[row["video_id"].strip()] = row["sentence"].strip()
    return out


def _float_field(entry: dict, key: str, where: str) -> float:
    v = entry.get(key, -1.0)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: field {key!r} is not a number ({v!r})") from None


def _id_list(ids, n: int = 10) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:n]) + (f" (+{len(ids) - n} more)" if len(ids) > n else "")


def _inconsistent(problems: list[str], strict: bool) -> list[str]:
    """Annotation inconsistencies: warnings, or with ``strict`` an error (the first one)."""
    if strict and problems:
        raise AnnotationError(problems[0] + " (--strict)")
    return problems


def read_msrvtt(root: str | os.PathLike, *, train_list: str = "9k", n_val: int = 500,
                seed: int = 0, test_csv: str = "MSRVTT_JSFUSION_test.csv", strict: bool = False,
                video_dir: str = "videos/all") -> Manifest:
    """MSR-VTT as CLIP4Clip distributes it: ``MSRVTT_data.json`` (``videos`` + ``sentences``,
    or the COCO-like ``annotations``), ``MSRVTT_train.{9k,7k}.csv``, and the 1k-A test csv.

    Train videos come from the train list; ``n_val`` of them (seeded) are held out for
    model selection (the seeds selected on test), sized by ``val_size``. Test videos are
    those of the test csv. Videos in neither list are left out.

    Inconsistencies (a video listed twice with another url or split, a listed video with no
    caption, captions of ids the json does not list) become the manifest's ``warnings``,
    each naming the ids; ``strict`` makes them an ``AnnotationError``.

    Videos are found by stem anywhere under ``video_dir`` (``videos/all``, as CLIP4Clip;
    DRL's README moves them to ``videos``), ``.mp4`` before ``.webm`` (CLIP4Clip's fallback).
    """
    from extractors.video_lookup import locate_videos  # it imports this module
    if train_list not in TRAIN_LISTS:
        raise AnnotationError(f"train_list {train_list!r}: choose from {', '.join(TRAIN_LISTS)}")
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"{root}: data root does not exist")
    data_path = root / "MSRVTT_data.json"
    if not data_path.is_file():
        raise AnnotationError(f"{root}: no MSRVTT_data.json (is this an MSR-VTT data root?)")
    data = _read_json(data_path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{data_path}: top level is not an object")

    meta: dict[str, dict] = {}
    clashes: set[str] = set()
    videos = data.get("videos", [])
    if not isinstance(videos, list):
        raise AnnotationError(f"{data_path}: field 'videos' is {json.dumps(videos)[:40]}, not a list of videos")
    for k, v in enumerate(videos):
        where = f"{data_path}: videos[{k}]"
        if not isinstance(v, dict) or "video_id" not in v:
            raise AnnotationError(f"{where}: no field 'video_id'")
        vid = validate_video_id(v["video_id"], f"{where}: field 'video_id'")
        entry = {"url": str(v.get("url", "")), "start": _float_field(v, "start time", where),
                 "end": _float_field(v, "end time", where), "split": str(v.get("split", ""))}
        if vid in meta and meta[vid] != entry:
            clashes.add(vid)
        meta.setdefault(vid, entry)  # the first entry wins, as it is the one listed first

    captions: dict[str, list[str]] = {}
    if "sentences" in data:
        entries, id_key, list_name = data["sentences"], "video_id", "sentences"
    elif "annotations" in data:
        entries, id_key, list_name = data["annotations"], "image_id", "annotations"
    else:
        raise AnnotationError(f"{data_path}: neither 'sentences' nor 'annotations' present")
    if not isinstance(entries, list):
        raise AnnotationError(f"{data_path}: field {list_name!r} is {json.dumps(entries)[:40]}, not a list")
    for k, s in enumerate(entries):
        where = f"{data_path}: {list_name}[{k}]"
        if not isinstance(s, dict) or id_key not in s or "caption" not in s:
            raise AnnotationError(f"{where}: needs fields {id_key!r} and 'caption'")
        vid = validate_video_id(str(s[id_key]), f"{where}: field {id_key!r}")
        if not isinstance(s["caption"], str) or not s["caption"].strip():
            raise AnnotationError(f"{where}: field 'caption' is not a non-empty string")
        captions.setdefault(vid, []).append(s["caption"].strip())

    train_csv = root / f"MSRVTT_train.{train_list}.csv"
    if not train_csv.is_file():
        raise AnnotationError(f"{root}: no {train_csv.name}")
    train_ids = _read_csv_column(train_csv, "video_id")
    test_path = root / test_csv
    if not test_path.is_file():
        raise AnnotationError(f"{root}: no {test_csv}")
    test_ids = _read_csv_column(test_path, "video_id")
    test_sentence = _read_test_sentences(test_path)
    overlap = set(train_ids) & set(test_ids)
    if overlap:
        raise AnnotationError(f"{test_path}: {len(overlap)} test video(s) also in {train_csv.name}")

    listed = set(train_ids) | set(test_ids)
    problems = []
    if clashes:
        problems.append(f"{data_path}: video(s) listed twice with another url, time or split (the first "
                        f"entry is used): {_id_list(clashes)}")
    no_caption = [v for v in dict.fromkeys(train_ids + test_ids) if not captions.get(v)]
    if no_caption:
        problems.append(f"{data_path}: {len(no_caption)} listed video(s) have no caption: {_id_list(no_caption)}")
    known = set(meta) | listed
    unknown = [v for v in captions if v not in known] if meta else []
    if unknown:
        problems.append(f"{data_path}: captions of {len(unknown)} id(s) in no video list are dropped: "
                        f"{_id_list(unknown)}")
    warnings = _inconsistent(problems, strict)
    val = hold_out(train_ids, n_val, seed)
    ids = list(dict.fromkeys(train_ids + test_ids))
    splits = ["test" if v in set(test_ids) else "val" if v in val else "train" for v in ids]
    paths, duplicates = locate_videos(root, ids, video_dir=video_dir, expected=lambda v: f"{video_dir}/{v}.mp4")
    cap_text, cap_video = [], []
    for i, vid in enumerate(ids):
        caps = captions.get(vid, [])
        if vid in test_sentence:  # the 1k-A caption comes first: single-caption eval uses it
            caps = [test_sentence[vid]] + [c for c in caps if c != test_sentence[vid]]
        for c in caps:
            cap_text.append(c)
            cap_video.append(i)
    return Manifest(
        dataset="msrvtt", root=str(root), video_ids=ids, splits=splits,
        video_paths=paths, caption_text=cap_text,
        caption_video=cap_video, urls=[meta.get(v, {}).get("url", "") for v in ids],
        start_times=[meta.get(v, {}).get("start", -1.0) for v in ids],
        end_times=[meta.get(v, {}).get("end", -1.0) for v in ids], warnings=warnings + duplicates, n_val=n_val,
    )


SPLITS = ("train", "val", "test")


def val_size(n_train: int, n_val: int) -> int:
    """How many of ``n_train`` training videos the validation hold-out takes: ``n_val``,
    capped at the larger of ``MIN_VAL_VIDEOS`` and a tenth of the training videos, so a
    small dataset still selects its epoch on 10 videos rather than one. When those 10
    would leave training less than a third (under 15 videos), the cap is a tenth, at
    least one video, and training keeps the rest."""
    if n_train < 2 or n_val < 1:
        return 0
    cap = max(MIN_VAL_VIDEOS, n_train // 10)
    if 3 * cap > 2 * n_train:
        cap = max(1, n_train // 10)
    return min(n_val, cap)


def hold_out(train_ids: Iterable[str], n_val: int, seed: int) -> set[str]:
    """The seeded validation videos (``val_size`` of them) drawn from ``train_ids``."""
    pool = sorted(set(train_ids))
    k = val_size(len(pool), n_val)
    return set(np.random.default_rng(seed).choice(pool, size=k, replace=False).tolist()) if k else set()


def _assign_splits(ids: list[str], given: dict[str, str], n_val: int, seed: int) -> list[str]:
    """Rows' own splits where given; the rest is train, with the seeded validation
    hold-out when no row names "val"."""
    split = {v: given.get(v, "train") for v in ids}
    if "val" not in split.values():
        for v in hold_out((v for v in ids if split[v] == "train"), n_val, seed):
            split[v] = "val"
    return [split[v] for v in ids]


def read_manifest_file(path: str | os.PathLike, root: str | os.PathLike | None = None, *,
                       dataset: str | None = None, n_val: int = 500, seed: int = 0) -> Manifest:
    """A generic manifest: CSV with a header or JSON Lines, one caption per row, fields
    ``video_id, path, caption`` and optionally ``split`` (train|val|validate|test), ``url``,
    ``start_time``, ``end_time``. Rows of one video share its path. ``root`` (default: the
    file's folder) is where relative paths point; paths may not leave it."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    if not path.is_file():
        raise AnnotationError(f"{path}: no such manifest file")
    rows: list[tuple[str, dict]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise AnnotationError(f"{path}: not UTF-8 text ({e.reason})") from None
        for k, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise AnnotationError(f"{path}: line {k}: malformed JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(obj, dict):
                raise AnnotationError(f"{path}: line {k}: not a JSON object")
            rows.append((f"{path}: line {k}", obj))
    elif path.suffix.lower() == ".csv":
        rows = [(f"{path}: line {n}", r) for n, r in _csv_rows(path, ("video_id", "path", "caption"))]
    else:
        raise AnnotationError(f"{path}: manifest must be .csv or .jsonl")
    if not rows:
        raise AnnotationError(f"{path}: no rows")

    order: dict[str, int] = {}
    vpath, given, url, t0, t1 = {}, {}, {}, {}, {}
    cap_text, cap_video = [], []
    root_abs = os.path.abspath(root)
    for where, r in rows:
        for key in ("video_id", "path", "caption"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise AnnotationError(f"{where}: field {key!r} missing or empty")
        vid = validate_video_id(r["video_id"].strip(), f"{where}: field 'video_id'")
        p = r["path"].strip()
        full = os.path.abspath(os.path.join(root_abs, p))
        if "\x00" in p or os.path.commonpath([root_abs, full]) != root_abs:
            raise AnnotationError(f"{where}: field 'path' {p!r} leaves the data root (rejected)")
        rel = os.path.relpath(full, root_abs)
        if any(part.startswith("-") for part in Path(rel).parts):
            raise AnnotationError(f"{where}: field 'path' {p!r} has a part starting with '-' (rejected)")
        if vid in vpath and vpath[vid] != rel:
            raise AnnotationError(f"{where}: field 'path': video {vid!r} already has path {vpath[vid]!r}")
        sp = str(r.get("split") or "").strip().lower()
        if sp:
            sp = "val" if sp == "validate" else sp
            if sp not in SPLITS:
                raise AnnotationError(f"{where}: field 'split' {sp!r} is not train, val or test")
            if given.get(vid, sp) != sp:
                raise AnnotationError(f"{where}: field 'split': video {vid!r} is already {given[vid]!r}")
            given[vid] = sp
        if vid not in order:
            order[vid] = len(order)
            vpath[vid] = rel
            url[vid] = str(r.get("url") or "")
            t0[vid] = _float_field({"start_time": r.get("start_time") or -1.0}, "start_time", where)
            t1[vid] = _float_field({"end_time": r.get("end_time") or -1.0}, "end_time", where)
        cap_text.append(r["caption"].strip())
        cap_video.append(order[vid])
    ids = list(order)
    return Manifest(dataset=dataset or path.stem, root=str(root), video_ids=ids,
                    splits=_assign_splits(ids, given, n_val, seed),
                    video_paths=[vpath[v] for v in ids], caption_text=cap_text, caption_video=cap_video,
                    urls=[url[v] for v in ids], start_times=[t0[v] for v in ids],
                    end_times=[t1[v] for v in ids], n_val=n_val)
