"""The trainer's plots and gate values, and `vtr report RUN` as one HTML page."""
from __future__ import annotations

import json
import os
import re

import numpy as np
from typer.testing import CliRunner

from training.data import select_split
from vtr.cli import app

PNG = b"\x89PNG\r\n\x1a\n"


def test_trainer_writes_plots_gates_and_ranks(sample_store, avigate_run, meanpool_run):
    for name in ("loss.png", "recall_at_1.png", "recall_at_k.png", "gates.png"):
        with open(os.path.join(avigate_run, "plots", name), "rb") as f:
            assert f.read(8) == PNG, name
    g = np.load(os.path.join(avigate_run, "gates.npz"))
    # the val and test videos a head can score (a video whose frames failed has no gates)
    n = select_split(sample_store, "val").n_videos + select_split(sample_store, "test").n_videos
    assert sorted(k for k in g.files if k.startswith("fusion")) == [
        "fusion.0.gate_ffn", "fusion.0.gate_mha", "fusion.1.gate_ffn", "fusion.1.gate_mha"]
    assert g["fusion.1.gate_mha"].shape == (n,) and np.all(np.abs(g["fusion.0.gate_ffn"]) <= 1)
    assert sorted(set(g["split"].tolist())) == ["test", "val"]
    r = np.load(os.path.join(avigate_run, "ranks.npz"))
    test = json.load(open(os.path.join(avigate_run, "test_metrics.json")))
    assert str(r["split"]) == "test"
    assert 100 * np.mean(r["t2v"] < 1) == test["multi"]["t2v"]["R1"]  # the same evaluation
    # meanpool has no gates: no gate file, the other plots still there
    assert not os.path.exists(os.path.join(meanpool_run, "gates.npz"))
    assert os.path.exists(os.path.join(meanpool_run, "plots", "recall_at_k.png"))


def test_report_renders(avigate_run, tmp_path):
    res = CliRunner().invoke(app, ["report", avigate_run])
    assert res.exit_code == 0, res.output
    page = open(os.path.join(avigate_run, "report.html"), encoding="utf-8").read()
    srcs = re.findall(r"<img src='([^']+)'", page)
    assert len(srcs) == 4
    for s in srcs:
        assert os.path.isfile(os.path.join(avigate_run, s)), s
    test = json.load(open(os.path.join(avigate_run, "test_metrics.json")))
    row = re.search(r"<tr><td>multi</td><td>t2v</td>(.*?)</tr>", page).group(1)
    cells = [float(x) for x in re.findall(r"<td>([\d.]+)</td>", row)]
    assert cells == [round(test["multi"]["t2v"][k], 1) for k in ("R1", "R5", "R10", "MdR", "MnR")]
    # a report written elsewhere points at the same images
    other = tmp_path / "r.html"
    assert CliRunner().invoke(app, ["report", avigate_run, "--out", str(other)]).exit_code == 0
    for s in re.findall(r"<img src='([^']+)'", other.read_text()):
        assert os.path.isfile(tmp_path / s)


def test_report_of_a_non_run(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "not a training run" in res.output
