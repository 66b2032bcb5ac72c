import json
import sys

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from storage import (StepWriter, check_store, export_h5, open_any, open_store, provenance_record,
                     set_provenance, store_info)
from storage.synthetic import fill_random
from vtr.cli import app

runner = CliRunner()


def test_check_clean_and_each_problem(small_store):
    fill_random(small_store, ("frames", "audio", "text"))
    assert check_store(small_store) == []
    g = zarr.open_group(small_store, mode="r+")
    f = g["frame_features"]
    row = np.asarray(f[7])
    row[0, 0] = np.nan
    f[7] = row
    m = np.asarray(g["frame_mask"][9])
    m[-1] = False  # features there are non-zero: a mask that lies
    g["frame_mask"][9] = m
    cm = np.asarray(g["caption_mask"][4])
    cm[:] = False
    cm[1] = True  # not a prefix
    g["caption_mask"][4] = cm
    g["audio_state"][3] = 2  # failed without a reason
    g["caption_video"][0] = 10_000
    problems = "\n".join(check_store(small_store))
    assert "NaN in frame_features of done video(s) [7]" in problems
    assert "padded frames hold non-zero features in video(s) [9" in problems
    assert "caption_mask is not a prefix" in problems and "[4]" in problems
    assert "audio: 1 failed item(s) without an error text" in problems
    assert "caption_video: indices outside" in problems


def test_export_h5_round_trip(small_store, tmp_path):
    fill_random(small_store, ("frames", "text"))
    out = tmp_path / "s.h5"
    export_h5(small_store, out)
    a, b = open_store(small_store), open_any(out)
    for name in ("frame_features", "frame_mask", "caption_mask", "caption_video", "split", "caption_text"):
        np.testing.assert_array_equal(np.asarray(a[name].values), np.asarray(b[name].values))
        assert a[name].dims == b[name].dims
    assert list(b.video.values[:2]) == ["video0", "video1"]
    assert b.attrs["dataset"] == "synthetic"
    with pytest.raises(Exception, match="already exists"):
        export_h5(small_store, out)


def test_info_counts_provenance_and_failures(small_store):
    w = StepWriter(small_store, "frames")
    idx = np.arange(0, 4)
    w.write(idx, {"frame_features": np.zeros((4, 12, 512)), "frame_mask": np.ones((4, 12), bool)},
            errors={2: "video2.mp4: truncated"})
    set_provenance(small_store, "frames", provenance_record("ViT-B-32", None, None, {"n_frames": 12}))
    info = store_info(small_store)
    assert info["steps"]["frames"] == {"done": 3, "missing": 596, "failed": 1}
    assert info["videos"] == 600 and info["captions"] == 1800
    assert info["provenance"]["frames"]["weights_sha256"] == "RANDOM-INIT"
    assert any("RANDOM-INIT" in w for w in info["warnings"])
    r = runner.invoke(app, ["store", "info", str(small_store)])
    assert r.exit_code == 0, r.output
    assert "WARNING: frames: features made with RANDOM-INIT weights" in r.output
    assert "video2.mp4: truncated" in r.output
    r = runner.invoke(app, ["store", "info", str(small_store), "--json"])
    assert json.loads(r.output)["steps"]["frames"]["failed"] == 1


def test_cli_errors_are_one_line(tmp_path, small_store):
    r = runner.invoke(app, ["store", "info", str(tmp_path / "nope")])
    assert r.exit_code == 1
    assert r.output.strip().count("\n") == 0 and "no such store" in r.output
    r = runner.invoke(app, ["store", "check", str(small_store)])
    assert r.exit_code == 0 and "consistent" in r.output
    g = zarr.open_group(small_store, mode="r+")
    g["caption_video"][0] = -5
    r = runner.invoke(app, ["store", "check", str(small_store)])
    assert r.exit_code == 1 and "caption_video" in r.output
    out = tmp_path / "x.h5"
    r = runner.invoke(app, ["store", "export-h5", str(small_store), str(out)])
    assert r.exit_code == 0 and out.exists()
