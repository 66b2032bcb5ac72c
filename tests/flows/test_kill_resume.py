"""SIGKILL the flow process inside a chunk write, re-run, and get the store an uninterrupted
run makes, without recomputing what was finished."""
import os
import signal
import subprocess

import numpy as np
import pytest

from storage import DONE, StepWriter, open_store
from storage.writers import PAUSE_WRITE_ENV

from .conftest import TINY, vtr_cmd, vtr_env

pytestmark = pytest.mark.slow
ARGS = [*TINY, "--video-chunk", "1", "--steps", "probe,crawl,frames,audio,text", "--frame-batch-size", "12"]
KILLED = 3  # the frames item whose write the kill interrupts (video2 is corrupt, not written)


def _chunk_inodes(store, var, blocks):
    return {b: os.stat(os.path.join(store, var, "c", str(b), "0", "0")).st_ino for b in blocks}


def test_kill_inside_a_write_and_resume_equals_uninterrupted(tiny_data, tmp_path):
    env = vtr_env(PREFECT_HOME=str(tmp_path / "home"))
    full = str(tmp_path / "full.zarr")
    subprocess.run(vtr_cmd("extract", "--data-root", tiny_data, "--store", full, *ARGS), env=env,
                   check=True, capture_output=True)

    store = str(tmp_path / "killed.zarr")
    # the write of frames item KILLED stops after its data, before its state: the kill lands
    # inside that write (its own session: the kill takes the decode workers down too)
    proc = subprocess.Popen(vtr_cmd("extract", "--data-root", tiny_data, "--store", store, *ARGS),
                            env={**env, PAUSE_WRITE_ENV: f"frames:{KILLED}"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if line.startswith(f"{PAUSE_WRITE_ENV}: frames {KILLED} "):
                break
        else:
            pytest.fail("the write never reached the hook:\n" + "".join(seen[-30:]))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()

    frames = StepWriter(store, "frames").states()
    assert frames[KILLED] != DONE, "the item killed inside its write is marked done"
    done_before = np.flatnonzero(frames == DONE)
    assert done_before.tolist() == [0, 1]
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
