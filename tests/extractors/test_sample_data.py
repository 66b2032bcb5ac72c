import csv
import hashlib
import json
import subprocess

import numpy as np
import pytest

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


def test_silent_videos_name_their_audio_on_a_loopback_server(tmp_path):
    import urllib.request

    from extractors.crawl import crawl_audio
    from extractors.probe import probe
    from extractors.sample_server import SampleServer, is_loopback_url

    root = tmp_path / "d"
    with SampleServer(root) as server:
        assert server.port > 0 and is_loopback_url(server.url)
        make_sample_dataset(root, n_videos=6, seed=1, base_url=server.url)
        videos = json.loads((root / "MSRVTT_data.json").read_text())["videos"]
        silent = [v for v in videos if v["url"]]
        assert silent and all(v["url"].startswith(f"{server.url}/audio/") for v in silent)
        with_track = {v["video_id"] for v in videos} - {v["video_id"] for v in silent}
        assert all(probe(root / "videos" / "all" / f"{v}.mp4").has_audio for v in with_track)
        assert not any(probe(root / "videos" / "all" / f"{v['video_id']}.mp4").has_audio for v in silent)
        # range requests, as ffmpeg seeks: a suffix range and a middle range
        name = silent[0]["url"].rsplit("/", 1)[1]
        data = (root / "audio" / name).read_bytes()
        for rng, want in (("bytes=-10", data[-10:]), ("bytes=5-9", data[5:10])):
            req = urllib.request.Request(silent[0]["url"], headers={"Range": rng})
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 206 and r.read() == want
        for v in silent:  # the crawl gets each annotated window
            r = crawl_audio(v["url"], v["start time"], v["end time"], tmp_path / f"{v['video_id']}.wav",
                            retries=0, timeout_s=60)
            assert r.status == "crawled", r.error
            assert probe(r.path).duration == pytest.approx(v["end time"] - v["start time"], abs=0.02)
    # a new server (a new port) only rewrites the annotations
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "audio").iterdir()}
    make_sample_dataset(root, n_videos=6, seed=1, base_url="http://127.0.0.1:9")
    assert "http://127.0.0.1:9/audio/" in (root / "MSRVTT_data.json").read_text()
    assert {p: p.stat().st_mtime_ns for p in (root / "audio").iterdir()} == mtimes


def test_without_a_server_silent_videos_have_no_url(tmp_path):
    root = make_sample_dataset(tmp_path / "d", n_videos=4, seed=11)
    assert not any(v["url"] for v in json.loads((root / "MSRVTT_data.json").read_text())["videos"])


@pytest.mark.filterwarnings("ignore:A test tried to use socket")
def test_only_loopback_connections_are_allowed():
    """pytest-socket guards the whole run (pyproject addopts): nothing leaves the machine."""
    import socket

    from pytest_socket import SocketConnectBlockedError

    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: blocked before connect
    # and in Python children, through the PYTHONPATH they inherit
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('192.0.2.1', 80), 1)"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "SocketConnectBlockedError" in r.stderr
    from extractors.sample_server import is_loopback_url
    assert is_loopback_url("http://[::1]:8/x") and is_loopback_url("http://localhost/x")
    assert not is_loopback_url("https://www.youtube.com/watch?v=x") and not is_loopback_url("file:///x")
