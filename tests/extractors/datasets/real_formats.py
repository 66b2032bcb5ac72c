"""Small data roots in each dataset's REAL distributed structure, quirks included (read from
CLIP4Clip's dataloaders/, the AVIGATE release, DRL, and the datasets' own files; see
shared/reference/datasets.md). Ids are real ones where the quirk is in the id.

Videos are tiny ffmpeg lavfi clips (1 s, 32x24), made once per container and copied.
"""
from __future__ import annotations

import csv
import json
import pickle
import shutil
import subprocess
from collections import OrderedDict, defaultdict
from pathlib import Path

# container -> ffmpeg video codec options; 1 s of 32x24 at 4 fps
_CODECS = {".mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast"],
           ".webm": ["-c:v", "libvpx", "-b:v", "50k"], ".mkv": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
           ".avi": ["-c:v", "mpeg4"], ".mov": ["-c:v", "libx264", "-pix_fmt", "yuv420p"]}


class TinyMedia:
    """One clip per container in ``folder``; ``put(dest)`` copies the one of dest's suffix."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for ext, codec in _CODECS.items():
            out = folder / f"clip{ext}"
            if not out.exists():
                subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=32x24:rate=4",
                                "-t", "1", *codec, str(out)], check=True, stdin=subprocess.DEVNULL)

    def put(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        ext = dest.suffix.lower() if dest.suffix.lower() in _CODECS else ".mp4"
        shutil.copy(self.folder / f"clip{ext}", dest)
        return dest


def _json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj), encoding="utf-8")


# --- ActivityNet Captions ------------------------------------------------------------------
# Real ids with several leading dashes; the ids files list more than the annotations hold.
ANET_TRAIN = ["v_--1DO2V4K74", "v_---9CpRcKoU", "v_QOlSCBRmfWY"]
ANET_VAL = ["v_--0edUL8zmA", "v_uqiMw7tQ1Cc"]
ANET_UNANNOTATED = ["v_-zHX3Gdx6I4", "v_0dkIbKXXFzI"]  # one in each ids file


def write_activitynet(root: Path, media: TinyMedia) -> dict:
    """``train_ids.json`` / ``val_ids.json`` (lists of ``v_`` keys), ``train.json`` /
    ``val_1.json`` keyed by them; sentences after the first start with a space; files saved
    as ``v_<id>.mp4`` (a common copy), ``<id>.mkv`` and ``v_<id>.webm``."""
    def ann(key: str, k: int) -> dict:
        return {"duration": 12.34 + k, "timestamps": [[0.0, 5.1], [4.2, 12.3]],
                "sentences": [f"A person in clip {k} walks in.", f" They sit down {k} times."]}
    _json(root / "train_ids.json", ANET_TRAIN[:2] + [ANET_UNANNOTATED[0]] + ANET_TRAIN[2:])
    _json(root / "val_ids.json", [ANET_VAL[0], ANET_UNANNOTATED[1], ANET_VAL[1]])
    _json(root / "train.json", {key: ann(key, k) for k, key in enumerate(ANET_TRAIN)})
    _json(root / "val_1.json", {key: ann(key, 10 + k) for k, key in enumerate(ANET_VAL)})
    names = {"v_--1DO2V4K74": "v_--1DO2V4K74.mp4", "v_---9CpRcKoU": "---9CpRcKoU.mkv",
             "v_QOlSCBRmfWY": "QOlSCBRmfWY.mp4", "v_--0edUL8zmA": "v_--0edUL8zmA.webm",
             "v_uqiMw7tQ1Cc": "sub/v_uqiMw7tQ1Cc.mp4"}
    for name in names.values():
        media.put(root / "videos" / name)
    return {"ids": [k[2:] for k in ANET_TRAIN + ANET_VAL],
            "paths": {k[2:]: f"videos/{v}" for k, v in names.items()}}


# --- DiDeMo --------------------------------------------------------------------------------
DIDEMO = {"train": ["10015567@N08_3655084291_d8b58466fa.mov", "49503105@N00_2520880624_a0541e5ac2.mp4"],
          "val": ["12090392@N02_13482799053_87ef417396.mov"],
          "test": ["13568184@N04_5340155717_bbbe85f6e5.avi", "96138722@N00_3210244046_f0de79c5b0.m4v"]}


def write_didemo(root: Path, media: TinyMedia) -> dict:
    """``{split}_data.json``: lists of moments with the real fields (``annotation_id``,
    ``description``, ``video``, ``times`` of four annotators, ``download_link``,
    ``num_segments``); ``{split}_list.txt``; files saved by the download script as
    ``<video>.mp4``, one as ``<video minus its extension>.mp4``."""
    paths = {}
    for split, names in DIDEMO.items():
        moments = []
        for k, name in enumerate(names):
            for j in range(2):
                moments.append({"annotation_id": 1000 * k + j, "description": f"the {j} thing in {name[:8]}",
                                "video": name, "times": [[j, j], [j, j + 1], [j, j], [j, j]],
                                "download_link": f"http://www.flickr.com/videos/{name.split('_')[0]}/{k}/",
                                "num_segments": 6})
        _json(root / f"{split}_data.json", moments)
        (root / f"{split}_list.txt").write_text("".join(f"{n}\n" for n in names))
        for name in names:
            file = f"{name.rsplit('.', 1)[0]}.mp4" if name.endswith(".m4v") else f"{name}.mp4"
            media.put(root / "videos" / file)
            paths[name] = f"videos/{file}"
    return {"ids": [n for names in DIDEMO.values() for n in names], "paths": paths}


# --- MSR-VTT -------------------------------------------------------------------------------
def write_msrvtt(root: Path, media: TinyMedia, *, n_train: int = 6, n_test: int = 2, webm: tuple[int, ...] = (1, 6),
                 video_dir: str = "videos/all", make_videos: bool = True,
                 url: str = "https://www.youtube.com/watch?v=AbCdEfGh{i:03d}") -> dict:
    """``MSRVTT_data.json`` (``info``, ``videos`` with ``category, url, video_id, start
    time, end time, split, id``, ``sentences`` with ``caption, video_id, sen_id``),
    ``MSRVTT_train.9k.csv`` (one column ``video_id``), ``MSRVTT_JSFUSION_test.csv``
    (``key, vid_key, video_id, sentence``). Videos ``webm`` exist only as ``.webm``; the clips
    are silent, so a crawl goes to ``url`` (``{i}``: the video's number)."""
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"video{i}" for i in range(n_train + n_test)]
    test = ids[n_train:]
    videos = [{"category": i % 20, "url": url.format(i=i), "video_id": v,
               "start time": 1.0, "end time": 11.0, "split": "validate" if v in test else "train", "id": i}
              for i, v in enumerate(ids)]
    sentences = [{"caption": f"a clip number {i} shows thing {j}", "video_id": v, "sen_id": 20 * i + j}
                 for i, v in enumerate(ids) for j in range(2)]
    _json(root / "MSRVTT_data.json", {"info": {"year": 2016}, "videos": videos, "sentences": sentences})
    with open(root / "MSRVTT_train.9k.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video_id"], *([v] for v in ids[:n_train])])
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        csv.writer(f).writerows([["key", "vid_key", "video_id", "sentence"],
                                 *([f"ret{k}", f"msr{v[5:]}", v, f"a clip number {v[5:]} shows thing 0"]
                                   for k, v in enumerate(test))])
    if make_videos:
        for i, v in enumerate(ids):
            media.put(root / video_dir / f"{v}{'.webm' if i in webm else '.mp4'}")
    return {"ids": ids, "webm": [ids[i] for i in webm if i < len(ids)]}


# --- VATEX ---------------------------------------------------------------------------------
VATEX_TRAIN = ["--07WQ2iBlw_000001_000011", "-_hbPLsZvvo_000012_000022", "AbCdEfGhIjK_000100_000110"]
VATEX_VAL = ["-0eK4ksS8rs_000034_000044", "Zz_9yXwVuTs_000005_000015", "QrStUvWxYz0_000200_000210"]


def write_vatex(root: Path, media: TinyMedia, *, test_list: bool = True) -> dict:
    """The official ``vatex_training_v1.0.json`` / ``vatex_validation_v1.0.json``: lists of
    ``{"videoID": "<youtube id>_<6-digit start>_<6-digit end>", "enCap": [10], "chCap":
    [10]}``; with ``test_list`` AVIGATE's ``test_list.txt`` (part of the validation file)."""
    def entry(vid: str) -> dict:
        return {"videoID": vid, "enCap": [f"a person does thing {j} in {vid[:4]}" for j in range(10)],
                "chCap": [f"\u4e00\u4e2a\u4eba {j}" for j in range(10)]}
    _json(root / "vatex_training_v1.0.json", [entry(v) for v in VATEX_TRAIN])
    _json(root / "vatex_validation_v1.0.json", [entry(v) for v in VATEX_VAL])
    if test_list:
        (root / "test_list.txt").write_text("".join(f"{v}\n" for v in VATEX_VAL[:2]))
    for v in VATEX_TRAIN + VATEX_VAL:
        media.put(root / "videos" / f"{v}.mp4")
    test = VATEX_VAL[:2] if test_list else VATEX_VAL
    return {"train": VATEX_TRAIN, "test": test, "ids": VATEX_TRAIN + test}


# --- MSVD ----------------------------------------------------------------------------------
MSVD = {"train": ["-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208", "00jrXRMlZOY_0_10", "02Vh8Pu7ZWI_13_24"],
        "val": ["-8y1Q0rA3n8_108_115", "0lh_UWF9ZP4_62_69"], "test": ["-_aaMGK6GGw_57_61", "0bSz70pYAP0_5_15"]}
EMPTY_CAPTION = ("00jrXRMlZOY_0_10", 1)  # (video, caption index) written as an empty token list


def write_msvd(root: Path, media: TinyMedia, *, container: type = defaultdict) -> dict:
    """``raw-captions.pkl`` pickled from a ``defaultdict(list)`` (or ``OrderedDict``) of id ->
    captions as word lists, one caption empty; ``{split}_list.txt``; clips ``<id>.avi``."""
    caps = defaultdict(list) if container is defaultdict else OrderedDict()
    for split, ids in MSVD.items():
        for v in ids:
            caps[v] = [["a", "man", "is", split, "ing", str(j)] for j in range(3)]
            media.put(root / "YouTubeClips" / f"{v}.avi")
        (root / f"{split}_list.txt").write_text("".join(f"{v}\n" for v in ids))
    caps[EMPTY_CAPTION[0]][EMPTY_CAPTION[1]] = []
    with open(root / "raw-captions.pkl", "wb") as f:
        pickle.dump(caps, f)
    return {"ids": [v for ids in MSVD.values() for v in ids]}


# --- LSMDC ---------------------------------------------------------------------------------
LSMDC_FILES = {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv",
               "test": "LSMDC16_challenge_1000_publictect.csv"}


def write_lsmdc(root: Path, media: TinyMedia) -> dict:
    """Three tab files without header or quoting, six fields; real lines end in spaces or
    a tab; clips in movie folders, ``<clip id>.avi``."""
    ids = {}
    for k, split in enumerate(LSMDC_FILES):
        movie = f"00{k + 1}{k}_American_Beauty"
        clips = [f"{movie}_00.0{j}.{10 * k + j:02d}.100-00.0{j}.{10 * k + j + 3:02d}.200" for j in range(2)]
        ids[split] = clips
        lines = []
        for j, c in enumerate(clips):
            t = "00.00.01.000"
            end = "\t" if j == 0 else "  "  # a trailing tab, trailing spaces
            lines.append(f"{c}\t{t}\t{t}\t{t}\t{t}\tSOMEONE says \"hi, there\" {j}.{end}")
            if split == "train":
                lines.append(f"{c}\t{t}\t{t}\t{t}\t{t}\tSOMEONE looks {j}. \t")
            media.put(root / "videos" / movie / f"{c}.avi")
        (root / LSMDC_FILES[split]).write_text("\r\n".join(lines) + "\r\n" if split == "val" else
                                               "\n".join(lines) + "\n")
    return {"ids": [c for clips in ids.values() for c in clips], "by_split": ids}


# --- Charades ------------------------------------------------------------------------------
CHARADES_COLUMNS = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
                    "descriptions", "actions", "length"]


def write_charades(root: Path, media: TinyMedia) -> dict:
    """``Charades_v1_{train,test}.csv``: quoted CSV with the real header; one training row
    has an empty script (it happens in the release)."""
    rows = {"train": [["46GP8", "HR43", "Kitchen", "6", "7", "Yes", "A person cooks, then eats.", "food;stove",
                       "A person is cooking.", "c092 11.90 21.20;c147 0.00 12.60", "24.83"],
                      ["N11GT", "0KZ7", "Stairs", "6", "7", "Yes", "", "stairs", "Someone walks.", "", "16.00"],
                      ["0IH69", "6RE8", "Bedroom", "6", "7", "Yes", "A person opens a book.", "book", "x",
                       "c026 0.0 5.0", "30.17"]],
            "test": [["YSKX3", "S01", "Garage", "6", "7", "Yes", "Person takes the box.", "box", "x",
                      "c001 0 2", "10.0"]]}
    for split, part in rows.items():
        with open(root / f"Charades_v1_{split}.csv", "w", newline="") as f:
            w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
            w.writerow(CHARADES_COLUMNS)
            w.writerows(part)
        for r in part:
            media.put(root / "Charades_v1_480" / f"{r[0]}.mp4")
    return {"ids": ["46GP8", "0IH69", "YSKX3"], "empty": "N11GT"}


WRITERS = {"activitynet": write_activitynet, "didemo": write_didemo, "msrvtt": write_msrvtt, "vatex": write_vatex,
           "msvd": write_msvd, "lsmdc": write_lsmdc, "charades": write_charades}
# the folder each fixture keeps its videos in, when not the reader's default
VIDEO_DIRS = {"msvd": "YouTubeClips", "charades": "Charades_v1_480"}


def write_fixture(name: str, root: Path, media: TinyMedia, **options) -> dict:
    """``root`` (created) filled by the dataset's writer."""
    root.mkdir(parents=True, exist_ok=True)
    return WRITERS[name](root, media, **options)
