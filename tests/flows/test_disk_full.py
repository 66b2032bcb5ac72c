"""A full disk during the frames step is one line naming the store, not pages of
tracebacks; what was finished is kept, and a re-run with space finishes the store."""
import errno
import os
import subprocess

import numpy as np
import pytest
import zarr.storage
from typer.testing import CliRunner

from storage import DONE, MISSING, open_group
from vtr.cli import app

pytestmark = pytest.mark.slow
ARGS = ["--random-init", "--ast-size", "tiny", "--workers", "1", "--steps", "probe,frames"]


def _one_error(r) -> str:
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.exit_code == 1 and len(errors) == 1 and "Traceback" not in r.output, r.output
    return errors[0]


def test_enospc_while_writing_frames_is_one_line(tiny_data, tmp_path, monkeypatch):
    store = str(tmp_path / "s.zarr")
    real_set = zarr.storage.LocalStore.set

    async def full_for_frames(self, key, value, *a, **kw):
        if key.startswith("frame_features/c"):  # the disk fills up as the first features go in
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return await real_set(self, key, value, *a, **kw)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full_for_frames)
    r = CliRunner().invoke(app, ["extract", "--data-root", str(tiny_data), "--store", store, *ARGS])
    line = _one_error(r)
    assert f"{store}: no space left on the device while writing frames items" in line, line
    g = open_group(store, mode="r")
    assert (np.asarray(g["probe_state"][:]) != MISSING).all()  # the finished step is kept
    assert (np.asarray(g["frames_state"][:]) != DONE).all()
    monkeypatch.setattr(zarr.storage.LocalStore, "set", real_set)
    r = CliRunner().invoke(app, ["extract", "--data-root", str(tiny_data), "--store", store, *ARGS])
    assert r.exit_code == 0, r.output
    assert (np.asarray(open_group(store, mode="r")["frames_state"][:]) == DONE).sum() == 5


def test_a_real_full_tmpfs_is_one_line(tiny_data, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        store = str(mnt / "s.zarr")
        common = ["extract", "--data-root", str(tiny_data), "--store", store, "--media-dir", str(tmp_path / "media"),
                  "--random-init", "--ast-size", "tiny", "--workers", "1"]
        r = CliRunner().invoke(app, [*common, "--steps", "probe"])
        assert r.exit_code == 0, r.output
        # fill the disk but for 16 KiB: less than one chunk of frame features (6 x 12 x 512 x 2)
        st = os.statvfs(mnt)
        with open(mnt / "filler", "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 16 * 1024))
        r = CliRunner().invoke(app, [*common, "--steps", "frames"])
        line = _one_error(r)
        assert "no space left on the device" in line and store in line, line
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
