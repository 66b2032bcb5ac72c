"""Workers on several machines share one store through an fsspec URL: here an
S3-compatible server (moto) on 127.0.0.1."""
import os
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import s3fs

from flows.config import ExtractConfig
from flows.extract import extract_msrvtt
from storage import DONE, FAILED, open_store, store_info

from .conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_options():
    exe = shutil.which("moto_server") or os.path.join(os.path.dirname(os.sys.executable), "moto_server")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": url}}
        s3fs.S3FileSystem(**opts).mkdir("vtr-test")
        yield opts
    finally:
        proc.terminate()
        proc.wait(10)


def test_flow_writes_an_s3_store(s3_options, tiny_data, tmp_path):
    store = "s3://vtr-test/msrvtt.zarr"
    cfg = ExtractConfig(random_init=True, ast_size="tiny", crawl_retries=0, workers=1,
                        steps=["probe", "crawl", "text"], media_dir=str(tmp_path / "media"),
                        storage_options=s3_options)
    result = extract_msrvtt(data_root=str(tiny_data), store=store, config=cfg)
    assert result["steps"]["text"]["done"] == 30
    ds = open_store(store, storage_options=s3_options)
    assert (ds.text_state.values == DONE).all()
    assert ds.probe_state.values[list(ds.video.values).index("video2")] == FAILED
    assert np.isfinite(ds.caption_embedding.values.astype(np.float32)).all()
    info = store_info(store, storage_options=s3_options)
    assert info["steps"]["text"]["done"] == 30 and info["bytes"] is None
    # a second run finds everything done in the remote store
    again = extract_msrvtt(data_root=str(tiny_data), store=store,
                           config=cfg.model_copy(update={"steps": ["text"]}))
    assert again["steps"]["text"]["done"] == 0
