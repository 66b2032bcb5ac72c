"""`vtr train` and `vtr eval` from the command line on a store the extraction flow wrote:
the run's files, and an eval report whose numbers are the saved head's, recomputed here by
brute force from the store's own split and caption order."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from storage import DONE, open_store
from vtr.cli import app

runner = CliRunner()


def brute_force_single(store: str, run: str) -> tuple[dict, int, int]:
    """Single-caption t2v metrics of the run's best head on the test split, its videos and
    first captions read straight from the store (not through SplitData)."""
    from training.data import load_arrays, select_split
    from training.evaluate import similarity_matrix
    from training.runs import audio_for, load_run
    ds = open_store(store)
    split = np.array([str(s) for s in ds.split.values])
    cv = ds.caption_video.values
    videos = [v for v in np.flatnonzero((split == "test") & (ds.frames_state.values == DONE))
              if ((cv == v) & (ds.text_state.values == DONE)).any()]
    first = [int(np.flatnonzero((cv == v) & (ds.text_state.values == DONE))[0]) for v in videos]
    head, cfg = load_run(run, "cpu")
    data = select_split(store, "test")
    assert data.videos.tolist() == videos and data.captions[data.first_captions()].tolist() == first
    audio = audio_for(head.text_fields + head.video_fields, store, run, cfg["train"]["audio_tokens"], False)
    arrays = load_arrays(store, data, head.text_fields + head.video_fields, audio)
    sim = similarity_matrix(head, arrays, torch.device("cpu"), amp=False)
    square = sim[[list(data.captions).index(c) for c in first]]
    ranks = np.array([(square[i] >= square[i, i]).sum() - 1 for i in range(len(videos))])
    return {"R1": 100 * np.mean(ranks < 1), "R5": 100 * np.mean(ranks < 5), "MnR": ranks.mean() + 1}, \
        len(videos), int(((split[cv] == "test") & (ds.text_state.values == DONE)).sum())


@pytest.mark.parametrize("head,extra", [
    ("meanpool", []),
    ("avigate", ["--set", "resampler_layers=1", "--set", "fusion_layers=1"]),
])
def test_train_and_evaluate_from_the_cli(sample_store, tmp_path, head, extra):
    run = tmp_path / head
    r = runner.invoke(app, ["train", "--store", sample_store, "--head", head, "--out", str(run),
                            "--epochs", "2", "--batch-size", "8", *extra])
    assert r.exit_code == 0, r.output[-2000:]
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(x["epoch"]) for x in rows] == [0, 1] and all(math.isfinite(float(x["train_loss"])) for x in rows)
    if head == "avigate":
        assert all(float(x["gate_mha_abs"]) >= 0 for x in rows)
    r = runner.invoke(app, ["eval", "--store", sample_store, "--run", str(run), "--split", "test"])
    assert r.exit_code == 0, r.output[-2000:]
    assert "R1" in r.output and "single" in r.output
    report = json.loads((run / "eval_test.json").read_text())
    # `vtr eval` of the saved head gives the scores the training run wrote for it
    trained = json.loads((run / "test_metrics.json").read_text())
    for proto in ("single", "multi"):
        for d in ("t2v", "v2t"):
            assert report[proto][d] == pytest.approx(trained[proto][d]), (proto, d)
    want, n_videos, n_captions = brute_force_single(sample_store, str(run))
    assert (report["n_videos"], report["n_captions"]) == (n_videos, n_captions) and n_videos >= 2
    got = report["single"]["t2v"]
    assert {k: got[k] for k in want} == pytest.approx(want, abs=1e-6)
