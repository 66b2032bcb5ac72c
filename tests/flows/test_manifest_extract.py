"""`vtr extract --manifest FILE`: any dataset as a CSV manifest (the `extract-dataset`
flow's manifest path), the bad file recorded as a failed item; bad input in one line."""
import csv

import numpy as np
from typer.testing import CliRunner

from storage import DONE, FAILED, as_str, open_store, read_attrs
from vtr.cli import app

runner = CliRunner()


def cli(*args):
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output.strip()


def test_extract_from_a_manifest(tiny_data, tmp_path):
    # the manifest lives apart from the videos: --data-root says where its paths point
    rows = [("clip0", "videos/all/video0.mp4", "a first caption", "train"),
            ("clip0", "videos/all/video0.mp4", "another writer's caption", "train"),
            ("clip2", "videos/all/video2.mp4", "the truncated file", "train"),
            ("clip3", "videos/all/video3.mp4", "a test caption", "test"),
            ("clip4", "videos/all/video4.mp4", "one more test caption", "test")]
    manifest = tmp_path / "list.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "path", "caption", "split"])
        w.writerows(rows)
    store = tmp_path / "mine.zarr"
    code, out = cli("extract", "--manifest", manifest, "--data-root", tiny_data, "--dataset", "mine",
                    "--store", store, "--random-init", "--steps", "probe,text")
    assert code == 0, out[-2000:]
    ds = open_store(store)
    assert read_attrs(store)["dataset"] == "mine"
    assert list(as_str(ds.video.values)) == ["clip0", "clip2", "clip3", "clip4"]
    # without a val column the reader holds training videos out for validation
    assert sorted(as_str(ds.split.values)[:2]) == ["train", "val"]
    assert list(as_str(ds.split.values)[2:]) == ["test", "test"]
    assert list(as_str(ds.caption_text.values)) == [r[2] for r in rows]
    probe = dict(zip(as_str(ds.video.values), ds.probe_state.values))
    assert probe["clip2"] == FAILED and probe["clip0"] == DONE
    err = as_str(ds.probe_error.values)[1]
    assert "video2.mp4" in err, err
    assert (ds.text_state.values == DONE).all()
    assert np.isfinite(ds.caption_embedding.values.astype(np.float32)).all()


def test_manifest_bad_input_is_one_line(tmp_path):
    code, out = cli("extract", "--manifest", tmp_path / "none.csv", "--store", tmp_path / "s.zarr",
                    "--random-init")
    assert code == 1 and out.splitlines()[-1] == f"error: {tmp_path / 'none.csv'}: no such manifest file"
    assert not (tmp_path / "s.zarr").exists()
    code, out = cli("extract", "--store", tmp_path / "s.zarr", "--random-init")
    assert code == 2 and out.splitlines()[-1] == "error: --data-root: the dataset's folder is needed (or --manifest FILE)"
