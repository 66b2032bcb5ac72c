"""notebooks/inspect_store.ipynb runs headless (nbclient) on the sample store, with and
without a run, from its own folder as Jupyter runs it, so it cannot rot; and the notebook
commands of docs/training.md work as written."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "inspect_store.ipynb"
JUPYTER = Path(sys.executable).parent / "jupyter"


def run_notebook(store: str, run: str = "") -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"VTR_STORE": store, "VTR_RUN": run, "OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        # "python3" is jupyter_client's native kernel: the interpreter running pytest (the venv)
        # the working directory is the notebook's folder, as `jupyter lab` and nbconvert set it
        NotebookClient(nb, kernel_name="python3", timeout=300,
                       resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
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


def _assert_clean_with_thumbnails(nb) -> None:
    """Frames found from the notebook's folder, the top 5's thumbnails drawn, and no red
    cell (stderr: warnings such as tqdm's "IProgress not found")."""
    text = _text(nb)
    assert "no such file" not in text.lower() and "cannot read" not in text, text[-2000:]
    assert re.search(r"\d+ thumbnails of /", text), text[-2000:]
    assert "5 of 5 thumbnails shown" in text
    stderr = [o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, stderr


@pytest.mark.slow
def test_notebook_with_run(sample_store, avigate_run):
    nb = run_notebook(sample_store, avigate_run)
    text = _text(nb)
    # the failures table and every step's states are shown
    assert "failed item(s)" in text and "crawl" in text
    assert "fusion.0.gate_mha" in text  # gate values per layer
    assert "query:" in text and "rank" in text  # the retrieval example
    assert _images(nb) >= 6  # frames+similarity, audio, masks, PCA, gates, top-5
    _assert_clean_with_thumbnails(nb)


def _readme_command(tool: str) -> str:
    """docs/training.md's shell command that runs ``jupyter TOOL``, continuation lines joined."""
    readme = (ROOT / "docs" / "training.md").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [ln for ln in readme.splitlines() if f"jupyter {tool} " in ln and "VTR_STORE=" in ln]
    assert len(lines) == 1, lines
    return lines[0].split("#")[0].strip()


def test_jupyter_lab_answers():
    r = subprocess.run([str(JUPYTER), "lab", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and re.fullmatch(r"\d+\.\d+\.\d+\s*", r.stdout), r.stdout + r.stderr
    assert "notebooks/inspect_store.ipynb" in _readme_command("lab")


@pytest.mark.slow
def test_readme_nbconvert_command_as_written(sample_store, avigate_run, tmp_path):
    """The docs' nbconvert line, run by a shell in a folder laid out like the checkout
    (``.venv``, ``notebooks/``) with the store and run at the relative paths it names."""
    cmd = _readme_command("nbconvert")
    env_paths = dict(re.findall(r"(VTR_STORE|VTR_RUN)=(\S+)", cmd))
    assert set(env_paths) == {"VTR_STORE", "VTR_RUN"} and not any(map(os.path.isabs, env_paths.values()))
    for var, target in (("VTR_STORE", sample_store), ("VTR_RUN", avigate_run)):
        link = tmp_path / env_paths[var]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    (tmp_path / ".venv").symlink_to(sys.prefix)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / NOTEBOOK.name).write_bytes(NOTEBOOK.read_bytes())
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))}
    env.pop("PWD", None)  # the shell sets it to the folder it starts in
    r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}{r.stderr[-3000:]}"
    out = shlex.split(cmd)[shlex.split(cmd).index("--output") + 1]
    nb = nbformat.read(tmp_path / "notebooks" / out, as_version=4)
    assert str(tmp_path / env_paths["VTR_STORE"]) in _text(nb)  # resolved against the launch folder
    _assert_clean_with_thumbnails(nb)


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
