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


def test_a_heartbeat_never_writes_over_the_run_that_took_the_store_over(tmp_path):
    """Run A, judged gone, keeps running: its next beat finds run B's record and stops,
    leaving B's lock as B wrote it."""
    store = str(tmp_path / "s.zarr")
    a = StoreLock(store, "run-a", heartbeat_s=0.05).acquire()
    try:
        rec = json.loads((tmp_path / "s.zarr.lock").read_text())
        b_rec = json.dumps({**rec, "run_id": "run-b", "heartbeat": 1.0})
        (tmp_path / "s.zarr.lock").write_text(b_rec)
        time.sleep(0.4)
        assert (tmp_path / "s.zarr.lock").read_text() == b_rec
        assert not a._beat.is_alive()
    finally:
        a.release()
    assert (tmp_path / "s.zarr.lock").read_text() == b_rec


def test_release_stops_the_heartbeat_before_it_deletes(tmp_path):
    store = str(tmp_path / "s.zarr")
    lock = StoreLock(store, "run-a", heartbeat_s=0.05).acquire()
    beat = lock._beat
    assert beat.is_alive()
    lock.release()
    assert not beat.is_alive() and lock_holder(store) is None
    time.sleep(0.2)
    assert not (tmp_path / "s.zarr.lock").exists()  # no late beat brought it back


def test_a_takeover_while_another_run_holds_the_guard_takes_nothing(tmp_path):
    import threading

    import filelock

    from storage.lock import _parse
    store = tmp_path / "s.zarr"
    (tmp_path / "s.zarr.lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "pid_start": None,
                                                      "started": 1.0, "heartbeat": 1.0, "run_id": "gone"}))
    held, done = threading.Event(), threading.Event()

    def other_taker():
        with filelock.FileLock(str(store) + ".lock.takeover"):
            held.set()
            done.wait(10)

    t = threading.Thread(target=other_taker)
    t.start()
    try:
        assert held.wait(10)
        lock = StoreLock(str(store), "run-b")
        stale = _parse((tmp_path / "s.zarr.lock").read_bytes())
        assert lock._take_over(stale, "no heartbeat") is False
        assert lock.took_over is None and lock_holder(str(store)).run_id == "gone"
    finally:
        done.set()
        t.join()


def test_a_store_path_with_a_trailing_slash_has_the_same_lock(tmp_path):
    store = str(tmp_path / "s.zarr")
    with StoreLock(store + "/", "run-a"):
        assert (tmp_path / "s.zarr.lock").exists()
        assert lock_holder(store + "/").run_id == lock_holder(store).run_id == "run-a"


def test_the_holder_record_and_the_refusal_word_for_word(tmp_path):
    import os
    import re
    import socket
    import threading

    import pytest

    from storage import StoreError
    from storage.lock import _iso, _proc_start

    store = str(tmp_path / "s.zarr")
    StoreLock(store, "never-held").release()  # a lock never acquired releases quietly
    a = StoreLock(store, "run-a").acquire()
    try:
        h = lock_holder(store)
        assert (h.host, h.pid, h.pid_start) == (socket.gethostname(), os.getpid(), _proc_start(os.getpid()))
        beat = [t for t in threading.enumerate() if t.name == "store-lock-heartbeat"]
        assert len(beat) == 1 and beat[0].daemon  # a run that dies without releasing still exits
        t = time.monotonic()
        with pytest.raises(StoreError) as e:
            StoreLock(store, "run-b").acquire()
        assert time.monotonic() - t < 0.8  # no wait unless asked
        assert str(e.value) == (f"{store}: in use by run run-a (host {h.host}, pid {h.pid}, started "
                                f"{_iso(h.started)}); wait for it to finish (or let this run wait: --lock-wait-s)")
        assert re.search(r"started \d{4}-\d\d-\d\d", str(e.value))
    finally:
        a.release()
    assert lock_holder(store) is None
