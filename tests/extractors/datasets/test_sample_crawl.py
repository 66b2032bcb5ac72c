"""The crawlable samples' audio comes from their stand-in originals over loopback HTTP: by
the window in the id (MSVD, VATEX) or whole (ActivityNet)."""
import shutil

import pytest

from extractors.crawl import crawl_audio
from extractors.datasets import get_dataset
from extractors.probe import probe


@pytest.mark.parametrize("name,seconds", [("msvd", 2.0), ("vatex", 10.0), ("activitynet", 3.0)])
def test_silent_clip_audio_crawled_from_its_stand_in(sample_root, http_server, tmp_path, name, seconds):
    root = sample_root(name)
    shutil.copytree(root / "youtube", http_server.dir / name)
    m = get_dataset(name).read(root, youtube_url=f"{http_server.url}/{name}/{{id}}.m4a")
    i = next(i for i, p in enumerate(m.video_paths) if not probe(root / p).has_audio)
    r = crawl_audio(m.urls[i], m.start_times[i] if m.start_times[i] >= 0 else None,
                    m.end_times[i] if m.end_times[i] >= 0 else None, tmp_path / "a.wav", retries=0,
                    socket_timeout_s=2.0, timeout_s=30.0)
    assert r.status == "crawled", r.error
    assert probe(tmp_path / "a.wav").duration == pytest.approx(seconds, abs=0.15)


@pytest.mark.parametrize("name", ["msvd", "vatex", "activitynet"])
def test_every_silent_sample_clip_has_a_stand_in(sample_root, name):
    root = sample_root(name)
    m = get_dataset(name).read(root, youtube_url="{id}")
    silent = [i for i, p in enumerate(m.video_paths) if not probe(root / p).has_audio]
    assert silent
    assert all((root / "youtube" / f"{m.urls[i]}.m4a").is_file() for i in silent)
