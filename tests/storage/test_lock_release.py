"""Releasing the store lock never deletes a lock another run holds now."""
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
