import csv
import hashlib
import json
import subprocess

import numpy as np

from extractors.annotations import read_msrvtt
from extractors.sample_data import make_sample_dataset


def _probe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=codec_type,width,height,avg_frame_rate:format=duration",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_sample_dataset_layout_and_variety(tmp_path):
    root = make_sample_dataset(tmp_path / "d", n_videos=12, seed=3)
    data = json.loads((root / "MSRVTT_data.json").read_text())
    assert {"videos", "sentences"} <= set(data)
    v0 = data["videos"][0]
    assert {"video_id", "url", "start time", "end time", "split"} <= set(v0)
    assert len(data["sentences"]) == 12 * 5
    with open(root / "MSRVTT_JSFUSION_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["key", "vid_key", "video_id", "sentence"] and len(rows) == 3
    with open(root / "MSRVTT_train.9k.csv") as f:
        assert len(list(csv.DictReader(f))) == 9
    portrait = landscape = with_audio = without_audio = 0
    rates, durations = set(), []
    for v in data["videos"]:
        p = _probe(root / "videos" / "all" / f"{v['video_id']}.mp4")
        vs = [s for s in p["streams"] if s["codec_type"] == "video"][0]
        portrait += vs["height"] > vs["width"]
        landscape += vs["width"] > vs["height"]
        has_a = any(s["codec_type"] == "audio" for s in p["streams"])
        with_audio += has_a
        without_audio += not has_a
        rates.add(vs["avg_frame_rate"])
        durations.append(float(p["format"]["duration"]))
    assert portrait and landscape and with_audio and without_audio and len(rates) > 1
    assert 2.9 <= min(durations) and max(durations) <= 15.5
    m = read_msrvtt(root)
    assert m.n_videos == 12 and set(m.splits) == {"train", "val", "test"}
    # the 1k-A sentence is the first caption of each test video
    first = {}
    for t, v in zip(m.caption_text, m.caption_video):
        first.setdefault(m.video_ids[v], t)
    assert all(first[r["video_id"]] == r["sentence"] for r in rows)


def test_sample_dataset_is_deterministic(tmp_path):
    digests = []
    for name in ("a", "b"):
        root = make_sample_dataset(tmp_path / name, n_videos=4, seed=11)
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(p.name.encode())
                h.update(p.read_bytes())
        digests.append(h.hexdigest())
    assert digests[0] == digests[1]
    other = make_sample_dataset(tmp_path / "c", n_videos=4, seed=12)
    assert (other / "MSRVTT_data.json").read_bytes() != (tmp_path / "a" / "MSRVTT_data.json").read_bytes()
