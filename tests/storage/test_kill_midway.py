"""A writer killed with SIGKILL mid-write leaves no done item with incomplete data."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from storage import DONE, MISSING, StepWriter, check_store, open_store
from storage.synthetic import create_synthetic_store

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


@pytest.mark.parametrize("step, after, delay", [("audio", 40, 0.0), ("audio", 300, 0.013),
                                                ("frames", 100, 0.0)])
def test_sigkill_midway_then_resume(tmp_path, step, after, delay):
    path = tmp_path / "k.zarr"
    create_synthetic_store(path, 700, 1, n_audio_tokens=300, audio_dim=256, dim=512)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), step], env=env)
    # wait until `after` items are done, then kill: the writer is then usually mid-write
    t0 = time.time()
    while time.time() - t0 < 60:
        if (StepWriter(path, step).states() == DONE).sum() >= after or proc.poll() is not None:
            break
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done, state = _verify(path, step)
    assert 0 < done.size < 700, "the kill should land partway (make the store bigger if not)"
    assert set(np.unique(state)) <= {DONE, MISSING}
    # resume: a re-opened writer does only what is missing, and the store ends complete
    pending_before = StepWriter(path, step).pending()
    assert not np.isin(done, pending_before).any()
    subprocess.run([sys.executable, "-c", WRITER, str(path), step], env=env, check=True)
    done, state = _verify(path, step)
    assert done.size == 700
    assert check_store(path) == []
