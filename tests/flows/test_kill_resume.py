"""SIGKILL the flow process partway, re-run, and get the store an uninterrupted run makes,
without recomputing what was finished."""
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from storage import DONE, StepWriter, open_store

from .conftest import TINY, vtr_cmd, vtr_env

pytestmark = pytest.mark.slow
ARGS = [*TINY, "--video-chunk", "1", "--steps", "probe,crawl,frames,audio,text", "--frame-batch-size", "12"]


def _chunk_inodes(store, var, blocks):
    return {b: os.stat(os.path.join(store, var, "c", str(b), "0", "0")).st_ino for b in blocks}


def test_kill_midway_and_resume_equals_uninterrupted(tiny_data, tmp_path):
    env = vtr_env(PREFECT_HOME=str(tmp_path / "home"))
    full = str(tmp_path / "full.zarr")
    subprocess.run(vtr_cmd("extract", "--data-root", tiny_data, "--store", full, *ARGS), env=env,
                   check=True, capture_output=True)

    store = str(tmp_path / "killed.zarr")
    # its own session: the kill takes the whole run down, Prefect's temporary server included
    proc = subprocess.Popen(vtr_cmd("extract", "--data-root", tiny_data, "--store", store, *ARGS), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(store) and (StepWriter(store, "frames").states() == DONE).sum() >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the flow finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    frames = StepWriter(store, "frames").states()
    done_before = np.flatnonzero(frames == DONE)
    assert 2 <= done_before.size < 6
    inodes = _chunk_inodes(store, "frame_features", done_before)

    subprocess.run(vtr_cmd("extract", "--data-root", tiny_data, "--store", store, *ARGS), env=env,
                   check=True, capture_output=True)
    a, b = open_store(full), open_store(store)
    for name in ("frames_state", "audio_state", "text_state", "frame_mask", "has_audio", "caption_mask"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    for name in ("frame_features", "audio_tokens", "caption_tokens", "caption_embedding"):
        np.testing.assert_allclose(a[name].values.astype(np.float32), b[name].values.astype(np.float32),
                                   atol=2e-3, err_msg=name)
    # finished blocks were not rewritten: their chunk files are the very same files
    assert _chunk_inodes(store, "frame_features", done_before) == inodes
