"""A crawl that fails is recorded as failed with its cause, and the next run retries it:
one silent video's URL answers 404, another silent video has no URL."""
import json
import shutil

import pytest

from flows.config import ExtractConfig
from flows.extract import extract_msrvtt
from storage import DONE, FAILED, open_store

CONFIG = ExtractConfig(random_init=True, ast_size="tiny", crawl_retries=0, workers=1, steps=["probe", "crawl"])


@pytest.fixture
def broken_urls(tiny_data, tmp_path):
    """tiny_data (video1 and video5 silent) copied and served on its own port; video1's
    URL names a file that is not there, video5 has no URL."""
    from extractors.sample_server import start_sample_server
    root = tmp_path / "msrvtt"
    shutil.copytree(tiny_data, root)
    server = start_sample_server(root)
    ann = json.loads((root / "MSRVTT_data.json").read_text())
    videos = {v["video_id"]: v for v in ann["videos"]}
    assert videos["video1"]["url"] and videos["video5"]["url"]
    real = videos["video1"]["url"].rsplit("/", 1)[1]
    videos["video1"]["url"] = f"{server.url}/audio/gone-{real}"
    videos["video5"]["url"] = ""
    (root / "MSRVTT_data.json").write_text(json.dumps(ann))
    yield root, root / "audio" / real, root / "audio" / f"gone-{real}"
    server.stop()


def test_failed_crawls_are_recorded_and_retried(broken_urls, tmp_path):
    root, real, gone = broken_urls
    store = str(tmp_path / "s.zarr")
    cfg = CONFIG.model_copy(update={"media_dir": str(tmp_path / "media")})
    result = extract_msrvtt(data_root=str(root), store=store, config=cfg)
    ds = open_store(store)
    ids = list(ds.video.values)
    one, five = ids.index("video1"), ids.index("video5")
    state, error, source = ds.crawl_state.values, ds.crawl_error.values, ds.audio_source.values
    assert state[one] == FAILED and "404" in str(error[one]) and gone.name in str(error[one])
    assert state[five] == FAILED and "no URL" in str(error[five])
    assert source[one] == source[five] == "none"
    assert result["failures"] >= 2
    # the file appears: the next run crawls video1 again; video5 still has nothing to crawl
    shutil.copy(real, gone)
    extract_msrvtt(data_root=str(root), store=store, config=cfg)
    ds = open_store(store)
    assert ds.crawl_state.values[one] == DONE and ds.audio_source.values[one] == "crawled"
    assert not str(ds.crawl_error.values[one])
    assert ds.crawl_state.values[five] == FAILED and "no URL" in str(ds.crawl_error.values[five])
