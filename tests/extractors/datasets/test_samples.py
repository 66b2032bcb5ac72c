"""Each sample writer makes what its docstring says, checked on the files themselves:
clips per split, texts per clip, which clips carry sound, clip lengths, file names and
containers, the stand-in originals of silent clips, and a read without warnings.

The writers run here directly (not through the session's cached samples), so a change to
one is caught by the test that names its dataset."""
from __future__ import annotations

import csv
import json
import pickle
import re
from pathlib import Path

import pytest

from extractors.datasets import get_dataset, read_dataset
from extractors.datasets._sample import SOURCES_DIR
from extractors.probe import probe

# dataset -> clips of each split in writing order (k), the texts of clip k, whether clip k
# has sound, its seconds, and a pattern for its file (relative to videos/)
SPECS = {
    "msvd": dict(splits=["train"] * 4 + ["val"] * 2 + ["test"] * 2, texts=lambda k: 3 + k % 3,
                 sound=lambda k: False, seconds=2.0, name=r"[-\w]{11}_(\d)_(\d+)\.avi"),
    "vatex": dict(splits=["train"] * 6 + ["test"] * 2, texts=lambda k: 5, sound=lambda k: k % 2 == 1,
                  seconds=2.0, name=r"[-\w]{11}_(\d{6})_(\d{6})\.mp4"),
    "activitynet": dict(splits=["train"] * 5 + ["test"] * 3, texts=lambda k: 1, sound=lambda k: k % 3 != 0,
                        seconds=3.0, name=r"[-\w]{11}\.mp4"),
    "didemo": dict(splits=["train"] * 4 + ["val"] * 2 + ["test"] * 2, texts=lambda k: 1,
                   sound=lambda k: k % 2 == 0, seconds=3.0,
                   name=r"\d{8}@N0\d_\d{10}_[0-9a-f]{8}\.(mov|mp4|avi|m4v)"),
    "lsmdc": dict(splits=["train"] * 4 + ["val"] * 2 + ["test"] * 2, texts=lambda k: 2 if k < 4 else 1,
                  sound=lambda k: True, seconds=2.0,
                  name=r"(0001_Sample_Film_One|1002_SAMPLE_FILM_TWO)/\1_00\.\d\d\.\d\d\.\d{3}-00\.\d\d\.\d\d\.\d{3}\.avi"),
    "charades": dict(splits=["train"] * 6 + ["test"] * 2, texts=lambda k: 1, sound=lambda k: True, seconds=2.0,
                     name=r"[A-Z0-9]{5}\.mp4"),
}


def _writing_order(name: str, root: Path) -> list[str]:
    """Video ids in the order the writer made them (its files list them so)."""
    if name == "msvd":
        return [v for s in ("train", "val", "test") for v in (root / f"{s}_list.txt").read_text().split()]
    if name == "vatex":
        return [v for s in ("train", "test") for v in (root / f"{s}_list.txt").read_text().split()]
    if name == "activitynet":
        return [k[2:] for f in ("train_ids.json", "val_ids.json") for k in json.loads((root / f).read_text())]
    if name == "didemo":
        return [v for s in ("train", "val", "test") for v in (root / f"{s}_list.txt").read_text().split()]
    if name == "lsmdc":
        from extractors.datasets.lsmdc import FILES
        ids = [line.split("\t")[0] for f in FILES.values() for line in (root / f).read_text().splitlines()]
        return list(dict.fromkeys(ids))
    from extractors.datasets.charades import FILES
    return [row["id"] for f in FILES.values() for row in csv.DictReader(open(root / f, newline=""))]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_sample_is_what_its_writer_documents(tmp_path, name):
    spec = SPECS[name]
    root = get_dataset(name).write_sample(tmp_path / name, seed=0)
    m = read_dataset(name, root, n_val=0) if name in ("vatex", "activitynet", "charades") else read_dataset(name, root)
    assert m.warnings == [], m.warnings
    order = _writing_order(name, root)
    assert len(order) == len(spec["splits"]) == m.n_videos
    want_split = ["test" if s == "test" else "val" if s == "val" else "train" for s in spec["splits"]]
    for k, vid in enumerate(order):
        i = m.video_ids.index(vid)
        assert m.splits[i] == want_split[k], (vid, k)
        assert re.fullmatch(spec["name"], m.video_paths[i].removeprefix("videos/")), m.video_paths[i]
        texts = [t for t, v in zip(m.caption_text, m.caption_video) if v == i]
        assert len(texts) == spec["texts"](k), (vid, texts)
        info = probe(root / m.video_paths[i])
        assert info.has_audio == spec["sound"](k), (vid, k)
        assert abs(info.duration - spec["seconds"]) < 0.3, (vid, info.duration)
    QUIRKS[name](root, m)
    # the stand-in originals: one per clip without sound, for the YouTube-sourced sets
    sources = sorted(p.stem for p in (root / SOURCES_DIR).glob("*.m4a")) if (root / SOURCES_DIR).is_dir() else []
    if name in ("msvd", "vatex", "activitynet"):
        silent = [vid[:11] for k, vid in enumerate(order) if not spec["sound"](k)]
        assert sources == sorted(silent)
        for k, vid in enumerate(order):
            if spec["sound"](k):
                continue
            length = probe(root / SOURCES_DIR / f"{vid[:11]}.m4a").duration
            want = {"msvd": lambda: int(re.fullmatch(spec["name"], vid + ".avi")[1]) + 3,
                    "vatex": lambda: int(re.fullmatch(spec["name"], vid + ".mp4")[1]) + 11,
                    "activitynet": lambda: 3.0}[name]()
            assert abs(length - want) < 0.2, (vid, length, want)
    else:
        assert sources == []


def _didemo(root, m):
    """2 or 3 moments a video (joined), empty download links, the release's fields."""
    moments = [x for s in ("train", "val", "test") for x in json.loads((root / f"{s}_data.json").read_text())]
    per_video = {}
    for x in moments:
        per_video.setdefault(x["video"], []).append(x)
        assert x["download_link"] == "" and x["num_segments"] == 6 and len(x["times"]) == 4
        assert set(x) == {"annotation_id", "description", "video", "times", "download_link", "num_segments"}
    assert sorted(len(v) for v in per_video.values()) == [2] * 4 + [3] * 4
    assert len({x["annotation_id"] for x in moments}) == len(moments)


def _activitynet(root, m):
    """Later sentences start with a space; the timestamps cut the 3 s."""
    for entry in json.loads((root / "train.json").read_text()).values():
        s = entry["sentences"]
        assert s[0][0] != " " and all(x.startswith(" ") and x.endswith(".") for x in s[1:])
        assert entry["duration"] == 3.0 and len(entry["timestamps"]) == len(s) in (2, 3)
        assert entry["timestamps"][0][0] == 0.0 and entry["timestamps"][-1][1] == 3.0


def _lsmdc(root, m):
    """SOMEONE, literal quotes and commas; aligned = extracted times."""
    from extractors.datasets.lsmdc import FILES
    lines = [ln for f in FILES.values() for ln in (root / f).read_text().splitlines()]
    assert len(lines) == 4 * 2 + 2 + 2
    for ln in lines:
        cells = ln.split("\t")
        assert len(cells) == 6 and cells[1] == cells[3] and cells[2] == cells[4]
        assert re.fullmatch(r'SOMEONE watches .+, then says "(wow|look)"\.', cells[5]), cells[5]


def _charades(root, m):
    """Two sentences with commas, in quoted cells, under the release's columns."""
    from extractors.datasets.charades import COLUMNS, FILES
    text = (root / FILES["train"]).read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == list(COLUMNS) and len(rows) == 6
    assert all(re.fullmatch(r"A person watches .+\. Then, .+\.", r["script"]) for r in rows)
    assert text.count('"A person watches') == 6


def _msvd(root, m):
    """Captions are word lists."""
    with open(root / "raw-captions.pkl", "rb") as f:
        raw = pickle.load(f)
    assert all(isinstance(c, list) and all(isinstance(w, str) for w in c) for caps in raw.values() for c in caps)


def _vatex(root, m):
    """A window of 10 s in each id."""
    assert {e - s for s, e in zip(m.start_times, m.end_times)} == {10.0}


QUIRKS = {"didemo": _didemo, "activitynet": _activitynet, "lsmdc": _lsmdc, "charades": _charades,
          "msvd": _msvd, "vatex": _vatex}
