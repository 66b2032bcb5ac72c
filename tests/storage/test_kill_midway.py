"""A writer killed with SIGKILL inside a write leaves no done item with incomplete data, and a
resume gives the store an uninterrupted run makes."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from storage import DONE, MISSING, StepWriter, check_store, open_store
from storage.synthetic import create_synthetic_store
from storage.writers import PAUSE_WRITE_ENV

WRITER = r"""
import sys, numpy as np
from storage import StepWriter
path, step = sys.argv[1], sys.argv[2]
w = StepWriter(path, step)
L = w.layout
for block in w.pending_blocks():
    for part in np.array_split(block, max(1, block.size // 8)):   # several writes per block
        v = (part % 251 + 1).astype(np.float32)[:, None, None] / 256.0
        if step == "audio":
            data = {"audio_tokens": np.broadcast_to(v, (part.size, L.n_audio_tokens, L.audio_dim)),
                    "has_audio": np.ones(part.size, bool)}
        else:
            data = {"frame_features": np.broadcast_to(v, (part.size, L.n_frames, L.dim)),
                    "frame_mask": np.ones((part.size, L.n_frames), bool)}
        w.write(part, data)
"""


def _expected(i):
    return np.float16((i % 251 + 1) / 256.0)


def _verify(path, step):
    ds = open_store(path)
    state = ds[f"{step}_state"].values
    done = np.flatnonzero(state == DONE)
    var = "audio_tokens" if step == "audio" else "frame_features"
    arr = ds[var]
    for i in done:  # every done item holds exactly its data, everywhere
        x = arr[int(i)].values
        assert (x == _expected(i)).all(), f"done item {i} has incomplete data"
    return done, state


def _run_writer(path, step, env):
    subprocess.run([sys.executable, "-c", WRITER, str(path), step], env=env, check=True)


@pytest.mark.parametrize("step, item", [("audio", 333), ("frames", 100)])
def test_sigkill_inside_a_write_then_resume(tmp_path, step, item):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    full = tmp_path / "full.zarr"  # the uninterrupted run
    create_synthetic_store(full, 700, 1, n_audio_tokens=300, audio_dim=256, dim=512)
    _run_writer(full, step, env)

    path = tmp_path / "k.zarr"
    create_synthetic_store(path, 700, 1, n_audio_tokens=300, audio_dim=256, dim=512)
    # the hook stops the write holding `item` after its data, before its state: the kill
    # lands there, inside the write, every time
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), step], stderr=subprocess.PIPE, text=True,
                            env={**env, PAUSE_WRITE_ENV: f"{step}:{item}"})
    try:
        line = proc.stderr.readline()
        assert line.startswith(f"{PAUSE_WRITE_ENV}: {step} {item} "), line + proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    var = "audio_tokens" if step == "audio" else "frame_features"
    assert (open_store(path)[var][item].values == _expected(item)).all(), "the hook paused before the data"
    done, state = _verify(path, step)
    assert state[item] == MISSING, "the killed item is marked done"
    assert 0 < done.size < 700 and done.max() < item
    assert set(np.unique(state)) <= {DONE, MISSING}
    # resume: a re-opened writer does only what is missing, and the store ends as the
    # uninterrupted run's
    assert not np.isin(done, StepWriter(path, step).pending()).any()
    _run_writer(path, step, env)
    done, state = _verify(path, step)
    assert done.size == 700
    assert check_store(path) == []
    a, b = open_store(full), open_store(path)
    for name in (f"{step}_state", f"{step}_error", var, "has_audio" if step == "audio" else "frame_mask"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
