"""`vtr extract --dataset NAME` on each dataset's real file structure with its quirks
(``tests/extractors/datasets/real_formats.py``): every annotated video is extracted, per-item
problems are warnings recorded in the store, `vtr store info` counts them and shows n_val;
`--n-val 0` gives the full training split and `vtr train` then selects the last epoch.

Only the probe step runs where the point is finding and reading the files (it opens each
video with ffprobe, so a wrong path is a failed item); the --n-val 0 run extracts what
training reads.
"""
import http.server
import json
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from storage import DONE, as_str, open_store, read_attrs
from tests.extractors.datasets.real_formats import VIDEO_DIRS, TinyMedia, write_fixture
from vtr.cli import app

from .conftest import TINY

runner = CliRunner()


def cli(*args):
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output.strip()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> TinyMedia:
    return TinyMedia(tmp_path_factory.mktemp("tiny_media"))


def extract(tmp_path, media, name, *flags, steps="probe", **options):
    root = tmp_path / name
    want = write_fixture(name, root, media, **options)
    store = tmp_path / f"{name}.zarr"
    video_dir = ["--video-dir", VIDEO_DIRS[name]] if name in VIDEO_DIRS else []
    code, out = cli("extract", "--dataset", name, "--data-root", root, "--store", store, *TINY, "--steps", steps,
                    *video_dir, *flags)
    assert code == 0, out
    return root, str(store), want


def all_probed(store) -> np.ndarray:
    ds = open_store(store)
    assert (ds.probe_state.values == DONE).all(), [str(e) for e in ds.probe_error.values if str(e)]
    return as_str(ds.video.values)


# annotation warnings the fixture's quirks give, the --n-val flag (None: not given), the
# n_val recorded, and the videos (val among them) the store then holds; with a release val
# list (MSVD, LSMDC, DiDeMo) the val videos not drawn are left out
CASES = {"activitynet": (1, 1, 1, 5, 1), "didemo": (0, 0, 0, 4, 0), "msrvtt": (0, None, 500, 8, 1),
         "vatex": (0, 1, 1, 5, 1), "msvd": (1, None, None, 8, 2), "lsmdc": (0, 1, 1, 5, 1),
         "charades": (1, 0, 0, 3, 0)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_layout_extracts_every_annotated_video(tmp_path, media, name):
    n_warnings, flag, n_val, n_videos, n_in_val = CASES[name]
    root, store, want = extract(tmp_path, media, name, *(["--n-val", flag] if flag is not None else []))
    ids = all_probed(store)
    assert len(ids) == n_videos and set(ids) <= set(want["ids"])
    attrs = read_attrs(store)
    assert len(attrs["annotation_warnings"]) == n_warnings, attrs["annotation_warnings"]
    assert attrs["n_val"] == n_val
    assert (as_str(open_store(store).split.values) == "val").sum() == n_in_val
    code, out = cli("store", "info", store)
    assert code == 0, out
    assert f"annotation warnings ({n_warnings})" in out or n_warnings == 0
    assert out.splitlines()[3].startswith("n_val ")


def test_msrvtt_drl_layout_through_video_dir(tmp_path, media):
    root, store, want = extract(tmp_path, media, "msrvtt", "--video-dir", "videos", video_dir="videos")
    ids = all_probed(store)
    paths = as_str(open_store(store).video_path.values)
    assert list(ids) == want["ids"] and all(p.startswith("videos/video") for p in paths)
    assert {p.rsplit(".", 1)[1] for p in paths} == {"mp4", "webm"}


def test_n_val_0_trains_on_the_full_split_and_selects_the_last_epoch(tmp_path, media):
    root, store, want = extract(tmp_path, media, "msrvtt", "--n-val", "0", steps="probe,frames,text",
                                n_train=4, n_test=2)
    split = as_str(open_store(store).split.values)
    assert (split == "train").sum() == 4 and (split == "val").sum() == 0
    assert read_attrs(store)["n_val"] == 0
    code, out = cli("store", "info", store)
    assert "n_val     0 (full training split; training selects the last epoch)" in out
    run = tmp_path / "run"
    code, out = cli("train", "--store", store, "--head", "meanpool", "--out", run, "--epochs", 2, "--batch-size", 2,
                    "--no-progress", "--device", "cpu")
    assert code == 0, out
    notes = [ln for ln in out.splitlines() if "last epoch" in ln]
    assert notes == ["note: the store was extracted with --n-val 0 (no validation split): selecting the last epoch"]
    assert json.loads((run / "config.json").read_text())["store"]["n_val"] == 0
    assert json.loads((run / "test_metrics.json").read_text())["best_epoch"] == 1


class _Refusing(http.server.BaseHTTPRequestHandler):
    """Answers ``CODES[path]`` (gone: 404, 410) or 503 (busy); ``hits`` counts requests per path."""

    CODES = {"/v0.m4a": 404, "/v1.m4a": 410}
    hits: dict[str, int] = {}

    def do_GET(self):
        _Refusing.hits[self.path] = _Refusing.hits.get(self.path, 0) + 1
        self.send_error(self.CODES.get(self.path, 503))

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_crawl_failures_are_recorded_and_counted_by_class(tmp_path, media, refusing_server):
    root, store, want = extract(tmp_path, media, "msrvtt", "--crawl-retries", "2", "--crawl-backoff-s", "0.1",
                                steps="probe,crawl", n_train=2, n_test=1, webm=(), url=refusing_server + "/v{i}.m4a")
    ds = open_store(store)
    errors = dict(zip(as_str(ds.video.values), (str(e) for e in ds.crawl_error.values)))
    assert errors["video0"].startswith(f"crawl [permanent] {refusing_server}/v0.m4a: ") and "404" in errors["video0"]
    assert errors["video1"].startswith("crawl [permanent] ") and "410" in errors["video1"]
    assert errors["video2"].startswith("crawl [transient] ") and "503" in errors["video2"]
    assert (_Refusing.hits["/v0.m4a"], _Refusing.hits["/v1.m4a"]) == (1, 1)  # tried once
    assert _Refusing.hits["/v2.m4a"] >= 3  # 1 + 2 retries
    code, out = cli("store", "info", store)
    assert "failures (3): permanent 2, transient 1" in out, out
