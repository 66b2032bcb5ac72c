"""Workers on several machines share one store through an fsspec URL, and read the videos
from one: here an S3-compatible server (moto) on 127.0.0.1. Every step writes to S3 and
reads its videos from S3, and the store equals the same extraction on local disk. The
credentials come from the environment or from a Prefect Secret block, never from a flow
parameter. Bad object-storage input is refused in one line before any video is decoded."""
import http.server
import os
import shutil
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
import s3fs
from typer.testing import CliRunner

from flows.config import ExtractConfig
from flows.errors import ExtractError
from flows.extract import extract_msrvtt
from flows.remote import Scratch
from flows.step_io import run_step_items
from storage import DONE, FAILED, open_store, store_info
from vtr.cli import app

from .conftest import TINY_STORE, free_port

pytestmark = pytest.mark.slow

TINY = dict(random_init=True, ast_size="tiny", crawl_retries=0, workers=1)
DATA = "s3://vtr-data/msrvtt"


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture(scope="module")
def s3_options():
    """The endpoint's fsspec options; the credentials are in the environment (as botocore
    reads them), not in the options."""
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
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
        opts = {"client_kwargs": {"endpoint_url": url}}
        s3fs.S3FileSystem(**opts).mkdir("vtr-test")
        yield opts
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def s3_data(s3_options, tiny_data) -> str:
    """The tiny dataset (a truncated video2, silent videos whose audio is served on
    loopback) uploaded to ``DATA``, plus a folder of videos without annotations."""
    fs = s3fs.S3FileSystem(**s3_options)
    fs.mkdir("vtr-data")
    fs.put(str(tiny_data), DATA, recursive=True)
    fs.put(str(tiny_data / "videos" / "all" / "video0.mp4"), "vtr-data/videos-only/videos/all/video0.mp4")
    return DATA


@pytest.fixture(scope="module")
def refusing_endpoint():
    """An S3 endpoint on 127.0.0.1 that refuses every request as S3 refuses bad credentials
    (403 AccessDenied): moto accepts any key."""
    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message><RequestId>1</RequestId></Error>")

    class Deny(http.server.BaseHTTPRequestHandler):
        def deny(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n and self.headers.get("Expect", "").lower() != "100-continue":
                self.rfile.read(n)  # a client waiting for "100 Continue" sends no body
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = deny

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{server.server_address[1]}"}}
    server.shutdown()
    server.server_close()


def _normalized(ds, swaps: dict[str, str]) -> dict[str, np.ndarray]:
    """Every variable's values, paths in strings rewritten by ``swaps`` (where the data
    root and the media folder are differs between the runs; nothing else may)."""
    out = {}
    for name in ds.variables:
        v = ds[name].values
        if v.dtype.kind in "OUT":
            flat = []
            for s in v.ravel().tolist():
                s = str(s)
                for a, b in swaps.items():
                    s = s.replace(a, b)
                flat.append(s)
            v = np.array(flat, dtype=str).reshape(v.shape)
        out[name] = v
    return out


def test_every_step_reads_and_writes_s3_as_on_local_disk(s3_options, s3_data, tiny_data, tiny_store, tmp_path,
                                                        monkeypatch):
    # on local disk: the session's tiny store, made with the same config
    local_store, local = tiny_store
    remote_store = "s3://vtr-test/every-step.zarr"
    scratch = tmp_path / "scratch"
    sizes = [p.stat().st_size for p in (tiny_data / "videos" / "all").iterdir()]
    assert sum(sizes) > 2.5 * max(sizes)
    base = ExtractConfig(**TINY_STORE)
    # two videos' worth of scratch: each block copies its videos over in several turns
    remote = extract_msrvtt(data_root=s3_data, store=remote_store, config=base.model_copy(update={
        "media_dir": str(tmp_path / "media-s3"), "storage_options": s3_options,
        "scratch_dir": str(scratch), "scratch_gb": 2.5 * max(sizes) / 1e9}))
    assert list(remote["steps"]) == list(local["steps"]) == ["probe", "crawl", "compress", "frames", "audio",
                                                             "text", "tags", "style", "validate"]
    for step, counts in local["steps"].items():
        assert {k: v for k, v in remote["steps"][step].items() if k != "seconds"} == \
            {k: v for k, v in counts.items() if k != "seconds"}, step
    assert remote["steps"]["validate"]["problems"] == 0
    assert not list(scratch.iterdir())  # every block removed its copies

    a = open_store(local_store)
    b = open_store(remote_store, storage_options=s3_options)
    assert b.attrs["data_root"] == s3_data
    va = _normalized(a, {str(tiny_data): s3_data, local_store + ".media": "MEDIA"})
    vb = _normalized(b, {str(tmp_path / "media-s3"): "MEDIA"})
    assert sorted(va) == sorted(vb)
    for name in va:
        if name.endswith("_inputs"):  # fingerprints hold the source files' mtimes: a copy's differ
            assert (va[name] != "").sum() == (vb[name] != "").sum(), name
            continue
        assert np.array_equal(va[name], vb[name], equal_nan=va[name].dtype.kind == "f"), name
    for step in ("probe", "crawl", "compress", "frames", "audio", "text", "tags", "style"):
        assert (vb[f"{step}_state"] == DONE).any(), step
    # the truncated video fails the same way, its message naming the file at its URL
    i = list(b.video.values).index("video2")
    assert vb["probe_state"][i] == FAILED and vb["probe_error"][i].startswith(f"{s3_data}/videos/all/video2.mp4")
    info = store_info(remote_store, storage_options=s3_options)
    assert info["steps"]["text"]["done"] == 30 and info["bytes"] is None
    # a second run finds everything done in the remote store, its credentials from a block
    from prefect.blocks.system import Secret

    Secret(value={"key": "testing", "secret": "testing"}).save("vtr-s3-test", overwrite=True)
    for k in CREDENTIALS:
        monkeypatch.delenv(k)
    again = extract_msrvtt(data_root=s3_data, store=remote_store, credentials="secret/vtr-s3-test",
                           config=base.model_copy(update={"steps": ["text"], "media_dir": str(tmp_path / "media-s3"),
                                                          "storage_options": s3_options}))
    assert again["steps"]["text"]["done"] == 0


def test_a_credential_in_a_flow_parameter_is_refused(tiny_data, tmp_path):
    cfg = ExtractConfig(**TINY, storage_options={"key": "AKIA", "secret": "x", "client_kwargs": {}})
    with pytest.raises(ExtractError) as e:
        extract_msrvtt(data_root=str(tiny_data), store="s3://vtr-test/secret.zarr", config=cfg)
    assert str(e.value) == ("config.storage_options holds a credential ('key'): a flow parameter is stored in "
                            "plain text; set it in the environment or name a block with credentials=")


def test_scratch_is_removed_when_a_block_fails(s3_options, s3_data, tmp_path):
    """A compute that crashes midway still leaves no copied video behind; a video larger
    than the scratch space fails alone, in one line naming the limit."""
    store = "s3://vtr-test/scratch.zarr"
    extract_msrvtt(data_root=s3_data, store=store, config=ExtractConfig(
        **TINY, steps=["probe"], media_dir=str(tmp_path / "media"), storage_options=s3_options))
    folder = tmp_path / "scratch"

    def crash(inputs):
        assert all(os.path.exists(p) for p in inputs.paths("video_path"))
        raise RuntimeError("decoder crashed")

    i = list(open_store(store, storage_options=s3_options).video.values).index("video2")
    with pytest.raises(RuntimeError, match="decoder crashed"):
        run_step_items(store, "probe", crash, indices=[i], storage_options=s3_options,
                       sources=lambda inp: [inp.resolve(p) for p in inp.column("video_path")],
                       scratch=Scratch(str(folder), 10**9, s3_options))
    assert folder.is_dir() and not list(folder.iterdir())

    res = run_step_items(store, "probe", lambda inputs: iter(()), indices=[i], storage_options=s3_options,
                         sources=lambda inp: [inp.resolve(p) for p in inp.column("video_path")],
                         scratch=Scratch(str(folder), 1000, s3_options))
    assert res == {"done": 0, "failed": 1}
    err = str(open_store(store, storage_options=s3_options).probe_error.values[i])
    assert err.startswith(f"{s3_data}/videos/all/video2.mp4: ") and "more than the scratch space of a block " \
        "(1e-06 GB, --scratch-gb)" in err


def test_a_reader_that_looks_videos_up_by_name_reads_a_url(s3_options, s3_data, tmp_path):
    """MSVD's reader walks its video folder: at a URL it finds the videos by name, the
    manifest names the URL, and the reader's errors name the URL, not the local copy."""
    from extractors.annotations import AnnotationError
    from extractors.datasets import get_dataset, read_dataset
    from flows.remote import read_annotations

    folder = get_dataset("msvd").write_sample(tmp_path / "msvd")
    s3fs.S3FileSystem(**s3_options).put(str(folder), "vtr-data/msvd", recursive=True)
    here = read_dataset("msvd", folder)
    there = read_annotations("s3://vtr-data/msvd/", s3_options, lambda root: read_dataset("msvd", root))
    assert there.root == "s3://vtr-data/msvd"
    assert (there.video_ids, there.video_paths, there.caption_text, there.urls) == \
        (here.video_ids, here.video_paths, here.caption_text, here.urls)
    s3fs.S3FileSystem(**s3_options).rm("vtr-data/msvd/test_list.txt")
    with pytest.raises(AnnotationError) as e:
        read_annotations("s3://vtr-data/msvd", s3_options, lambda root: read_dataset("msvd", root))
    assert str(e.value) == "s3://vtr-data/msvd: no test_list.txt (the MSVD annotation file expected there)"


# --- bad input: one line, before any video is decoded --------------------------------------------
def test_storage_options_flag_must_be_a_json_object(tiny_data, tmp_path):
    for text, why in [("{key: 1}", "--storage-options: not JSON (Expecting property name enclosed in double "
                                   "quotes at column 2)"),
                      ('["key"]', "--storage-options: wants a JSON object {...}, got list '[\"key\"]'")]:
        res = CliRunner().invoke(app, ["extract", "--data-root", str(tiny_data), "--store",
                                       str(tmp_path / "s.zarr"), "--storage-options", text])
        assert res.exit_code == 2, res.output
        assert res.output.strip() == f"error: {why}"
    assert not (tmp_path / "s.zarr").exists()


def test_storage_options_flag_reaches_the_flow(s3_options, prefect_server, tmp_path):
    """The JSON becomes the config's options: a URL data root with no annotations is read
    through them (here: one line, and no store)."""
    import json

    res = CliRunner().invoke(app, ["extract", "--data-root", "s3://vtr-test/nothing-here", "--store",
                                   str(tmp_path / "s.zarr"), "--storage-options", json.dumps(s3_options)])
    assert res.exit_code == 1, res.output
    assert res.output.strip().splitlines()[-1] == \
        "error: s3://vtr-test/nothing-here: data root does not exist (no file under it)"
    assert not (tmp_path / "s.zarr").exists()


def _refused(data_root: str, store: str, options: dict, tmp_path) -> str:
    cfg = ExtractConfig(**TINY, media_dir=str(tmp_path / "media"), storage_options=options)
    with pytest.raises(ExtractError) as e:
        extract_msrvtt(data_root=data_root, store=store, config=cfg)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_buckets_are_refused(s3_options, s3_data, tiny_data, tmp_path):
    assert _refused(str(tiny_data), "s3://no-such-bucket/x.zarr", s3_options, tmp_path) == \
        "s3://no-such-bucket/x.zarr: bucket 'no-such-bucket' does not exist"
    local = tmp_path / "x.zarr"
    assert _refused("s3://no-such-bucket/msrvtt", str(local), s3_options, tmp_path) == \
        "s3://no-such-bucket/msrvtt: bucket 'no-such-bucket' does not exist"
    assert not local.exists()


def test_refused_credentials_are_refused(refusing_endpoint, tiny_data, tmp_path):
    why = "access refused (Forbidden): check the credentials in --storage-options"
    assert _refused(str(tiny_data), "s3://vtr-test/x.zarr", refusing_endpoint, tmp_path) == \
        f"s3://vtr-test/x.zarr: {why}"
    local = tmp_path / "x.zarr"
    assert _refused("s3://vtr-data/msrvtt", str(local), refusing_endpoint, tmp_path) == \
        f"s3://vtr-data/msrvtt: {why}"
    assert not local.exists()


def test_a_data_root_url_without_annotations_is_refused(s3_options, s3_data, tmp_path):
    local = tmp_path / "x.zarr"
    assert _refused("s3://vtr-data/videos-only", str(local), s3_options, tmp_path) == \
        "s3://vtr-data/videos-only: no MSRVTT_data.json (is this an MSR-VTT data root?)"
    assert _refused("s3://vtr-data/nothing-here/", str(local), s3_options, tmp_path) == \
        "s3://vtr-data/nothing-here: data root does not exist (no file under it)"
    assert not local.exists()
