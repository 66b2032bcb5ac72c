"""`vtr report` as a reader sees it: the page fits a 1200 px window in headless Chromium
(eight gate histograms wrap), R@K's axis has the tables' Ks, epochs count from 1, split
sizes are shown, and a run that has not finished renders what it has and names the rest."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from training.plots import k_ticks
from vtr.cli import app

WINDOW = 1200
# writes the page's laid-out width into the DOM that --dump-dom prints (after the images
# load, so their sizes count)
MEASURE = ("<script>window.addEventListener('load', () => {document.body.setAttribute('data-widths', "
           "document.documentElement.scrollWidth + ' ' + window.innerWidth)})</script>")


def chromium() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(b)), None)


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory) -> tuple[str, list[str]]:
    """An AVIGATE run with four fusion layers (eight gates) on a small planted store whose
    val split has 3 videos; returns the run folder and the trainer's log lines."""
    from training.planted import write_planted_store
    from training.runs import TrainConfig
    from training.trainer import train
    root = tmp_path_factory.mktemp("layout")
    store = str(root / "planted.zarr")
    write_planted_store(store, 40, 2, splits=(25, 3, 12), audio_share=0.25, dim=32, audio_dim=16,
                        n_audio_tokens=8, n_frames=6)
    run, log = str(root / "avigate"), []
    train(store, "avigate", run, {"fusion_layers": 4, "resampler_layers": 1, "n_heads": 2, "gate_hidden": 16},
          TrainConfig(epochs=2, batch_size=8, audio_tokens="pool-tokens-4"), progress=False, log=log.append)
    return run, log


def page_widths(page: Path, browser: str) -> tuple[int, int]:
    """(scrollWidth, innerWidth) of ``page`` in a WINDOW-wide headless Chromium."""
    probe = page.with_name(page.stem + ".measure.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        f"--window-size={WINDOW},900", "--virtual-time-budget=5000", "--dump-dom",
                        probe.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-widths="(\d+) (\d+)"', r.stdout)
    assert found, f"chromium printed no widths (rc {r.returncode}): {r.stderr[-1500:]}"
    return int(found.group(1)), int(found.group(2))


def png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    return struct.unpack(">II", head[16:24])


def test_report_fits_a_1200px_window(gated_run):
    browser = chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (scripts/setup.sh installs it when run as root)")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    run, _ = gated_run
    r = CliRunner().invoke(app, ["report", run])
    assert r.exit_code == 0, r.output
    page = Path(run) / "report.html"
    assert png_size(os.path.join(run, "plots", "gates.png"))[0] <= WINDOW - 100  # 8 gates in a grid
    scroll, inner = page_widths(page, browser)
    assert inner == WINDOW and scroll <= inner, (scroll, inner)
    # the measurement sees an overflow when there is one: a wide element makes it scroll
    wide = page.with_name("wide.html")
    wide.write_text(page.read_text(encoding="utf-8").replace(
        "<body>", "<body><div style='width:1600px'>wide</div>"), encoding="utf-8")
    assert page_widths(wide, browser)[0] > WINDOW


def test_k_ticks_are_the_tables_ks():
    assert k_ticks(1) == [1] and k_ticks(3) == [1, 2, 3]
    assert k_ticks(24) == [1, 5, 10]
    assert k_ticks(1000) == [1, 5, 10, 50, 100, 500, 1000]


def test_epochs_count_from_one_and_splits_are_shown(gated_run):
    run, log = gated_run
    assert "warning: val has 3 video(s), under 10: the best epoch on val is mostly chance" in log
    assert any(m.startswith("epoch 2/2:") for m in log)
    r = CliRunner().invoke(app, ["report", run])
    assert r.exit_code == 0 and r.output.strip() == f"wrote {os.path.join(run, 'report.html')}"
    page = (Path(run) / "report.html").read_text(encoding="utf-8")
    assert "<h2>Last epoch (2 of 2)</h2>" in page
    assert "<tr><td>epoch</td><td>2</td></tr>" in page  # the same number in the table
    best = re.search(r"best epoch on val: (\d+)", page)
    assert best and best.group(1) in ("1", "2")
    assert "Split sizes (videos with features): train 25, val 3, test 12." in page
    assert "val has 3 video(s), under 10" in page
    # `vtr store info` shows the sizes and the same note
    from training.runs import read_config
    info = CliRunner().invoke(app, ["store", "info", read_config(run)["store"]["path"]])
    assert info.exit_code == 0 and "(train 25, val 3, test 12)" in info.output
    assert "NOTE: val has 3 video(s), under 10: the best epoch on val is mostly chance" in info.output


def test_unfinished_run_renders_what_exists(gated_run, tmp_path):
    run = str(tmp_path / "unfinished")
    shutil.copytree(gated_run[0], run)
    os.remove(os.path.join(run, "test_metrics.json"))
    r = CliRunner().invoke(app, ["report", run])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"wrote {os.path.join(run, 'report.html')} (missing: test metrics)"
    page = (Path(run) / "report.html").read_text(encoding="utf-8")
    assert "No test metrics yet" in page and "Missing: test metrics." in page
    assert "<h2>Last epoch (2 of 2)</h2>" in page and len(re.findall(r"<img src=", page)) == 4
    # a run that has not finished an epoch: the configuration only, and one line saying so
    os.remove(os.path.join(run, "metrics.csv"))
    r = CliRunner().invoke(app, ["report", run])
    assert r.exit_code == 0 and r.output.count("\n") == 1
    assert "(missing: test metrics, epochs (no epoch finished))" in r.output


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 1 and r.output.strip() == f"error: {tmp_path}: not a training run (no config.json)"
