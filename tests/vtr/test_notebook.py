"""notebooks/inspect_store.ipynb runs headless (nbclient) on the sample store, with and
without a run, so it cannot rot."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "inspect_store.ipynb"


def run_notebook(store: str, run: str = "") -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"VTR_STORE": store, "VTR_RUN": run, "OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        # "python3" is jupyter_client's native kernel: the interpreter running pytest (the venv)
        NotebookClient(nb, kernel_name="python3", timeout=300,
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return nb


def _text(nb) -> str:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_notebook_with_run(sample_store, avigate_run):
    nb = run_notebook(sample_store, avigate_run)
    text = _text(nb)
    # the failures table and every step's states are shown
    assert "failed item(s)" in text and "crawl" in text
    assert "fusion.0.gate_mha" in text  # gate values per layer
    assert "query:" in text and "rank" in text  # the retrieval example
    assert _images(nb) >= 6  # frames+similarity, audio, masks, PCA, gates, top-5


def test_notebook_without_run_on_a_store_with_failures(sample_store, tmp_path):
    """Failed frames, audio and text items are listed; the plots use the items that are done."""
    import shutil

    from storage import StepWriter
    store = str(tmp_path / "failing.zarr")
    shutil.copytree(sample_store, store)
    for step, idx in (("frames", 0), ("audio", 1), ("text", 0)):
        w = StepWriter(store, step)
        w.reset(np.array([idx]))
        w.write(np.array([idx]), errors={idx: f"{step}: injected failure for the test"})
    nb = run_notebook(store)
    text = _text(nb)
    assert "set VTR_RUN" in text
    for step in ("frames", "audio", "text"):
        assert f"{step}: injected failure" in text
    assert "video1: " in text and "video0: " not in text  # video0's frames failed
    assert _images(nb) >= 4
