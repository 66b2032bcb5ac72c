"""Store lock edge cases: a release never deletes a lock another run holds now; a lock
file that is not a record is taken over."""
from __future__ import annotations

import json
import time

from storage.lock import StoreLock, lock_holder


def test_release_after_a_takeover_keeps_the_new_holders_lock(tmp_path):
    """Run A is judged stale (its host stopped beating) and run B takes the store over;
    when A finally releases, the lock must still be B's."""
    store = str(tmp_path / "s.zarr")
    a = StoreLock(store, "run-a", heartbeat_s=3600).acquire()
    rec = json.loads((tmp_path / "s.zarr.lock").read_text())
    (tmp_path / "s.zarr.lock").write_text(json.dumps({**rec, "host": "elsewhere", "heartbeat": time.time() - 3600}))
    b = StoreLock(store, "run-b", stale_s=600).acquire()
    try:
        assert b.took_over and lock_holder(store).run_id == "run-b"
        a.release()
        assert lock_holder(store).run_id == "run-b"
    finally:
        b.release()
    assert lock_holder(store) is None


def test_a_lock_file_that_is_not_a_record_is_taken_over(tmp_path):
    """A holder that died while writing its lock leaves no valid record: the lock is
    stale, taken over, and named as such."""
    store = str(tmp_path / "s.zarr")
    (tmp_path / "s.zarr.lock").write_text('{"host": "a-host", "pid": ')
    with StoreLock(store, "run-b") as lock:
        assert lock.took_over.startswith("took over the lock of run ? (host ?, pid -1, started 1970-01-01T00:00:00+00:00)")
        assert "no heartbeat for" in lock.took_over
        rec = json.loads((tmp_path / "s.zarr.lock").read_text())
        assert sorted(rec) == ["heartbeat", "host", "pid", "pid_start", "run_id", "started"]
        assert rec["heartbeat"] == rec["started"] and rec["pid_start"] is not None


def test_a_record_without_heartbeat_counts_from_its_start(tmp_path):
    """Older locks have no heartbeat field: a live holder's lock is still refused."""
    import os
    import socket

    import pytest

    from storage import StoreError
    rec = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": None, "started": time.time(),
           "run_id": "old-run"}
    (tmp_path / "s.zarr.lock").write_text(json.dumps(rec))
    with pytest.raises(StoreError, match="in use by run old-run"):
        StoreLock(str(tmp_path / "s.zarr"), "run-b").acquire()
