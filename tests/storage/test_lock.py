"""The store lock: one run per store, a holder named in the refusal, stale locks taken over once."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from storage import StoreError
from storage.lock import StoreLock, lock_holder


def _write_lock(store, **fields):
    rec = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": None, "started": time.time(),
           "heartbeat": time.time(), "run_id": "other-run", **fields}
    (store.parent / (store.name + ".lock")).write_text(json.dumps(rec))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_second_run_is_refused_naming_the_holder(tmp_path):
    store = str(tmp_path / "s.zarr")
    with StoreLock(store, "run-a"):
        holder = lock_holder(store)
        assert (holder.run_id, holder.pid, holder.host) == ("run-a", os.getpid(), socket.gethostname())
        with pytest.raises(StoreError) as e:
            StoreLock(store, "run-b").acquire()
        msg = str(e.value)
        assert "\n" not in msg
        assert msg.startswith(f"{store}: in use by run run-a (host {socket.gethostname()}, pid {os.getpid()}")
    assert lock_holder(store) is None  # released
    with StoreLock(store, "run-b"):
        assert lock_holder(store).run_id == "run-b"


def test_waits_for_the_holder_up_to_a_bound(tmp_path):
    store = str(tmp_path / "s.zarr")
    first = StoreLock(store, "run-a").acquire()
    threading.Timer(0.5, first.release).start()
    t0 = time.time()
    with StoreLock(store, "run-b", wait_s=10):
        assert 0.4 < time.time() - t0 < 5
    first = StoreLock(store, "run-a").acquire()
    try:
        t0 = time.time()
        with pytest.raises(StoreError, match="in use by run run-a"):
            StoreLock(store, "run-b", wait_s=0.5).acquire()
        assert time.time() - t0 >= 0.5
    finally:
        first.release()


def test_lock_of_a_dead_pid_on_this_host_is_taken_over(tmp_path):
    store = tmp_path / "s.zarr"
    _write_lock(store, pid=_dead_pid())
    lock = StoreLock(str(store), "run-b").acquire()
    try:
        assert "took over the lock of run other-run" in lock.took_over and "is gone" in lock.took_over
        assert lock_holder(str(store)).run_id == "run-b"
    finally:
        lock.release()


def test_killed_but_unreaped_holder_is_gone(tmp_path):
    store = tmp_path / "s.zarr"
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while open(f"/proc/{zombie.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.05)
    try:
        _write_lock(store, pid=zombie.pid)
        with StoreLock(str(store), "run-b") as lock:
            assert f"pid {zombie.pid} is gone" in lock.took_over
    finally:
        zombie.wait()


def test_reused_pid_is_not_the_holder(tmp_path):
    store = tmp_path / "s.zarr"
    _write_lock(store, pid=os.getpid(), pid_start="1")  # our pid, but another process's start time
    with StoreLock(str(store), "run-b") as lock:
        assert lock.took_over


def test_live_holder_on_another_host_is_kept_a_silent_one_taken_over(tmp_path):
    store = tmp_path / "s.zarr"
    _write_lock(store, host="elsewhere", pid=1)
    with pytest.raises(StoreError, match=r"in use by run other-run \(host elsewhere, pid 1"):
        StoreLock(str(store), "run-b").acquire()
    _write_lock(store, host="elsewhere", pid=1, heartbeat=time.time() - 3600)
    with StoreLock(str(store), "run-b", stale_s=600) as lock:
        assert "no heartbeat for" in lock.took_over


def test_heartbeat_keeps_a_long_run_fresh(tmp_path):
    store = str(tmp_path / "s.zarr")
    with StoreLock(store, "run-a", heartbeat_s=0.1):
        before = lock_holder(store).heartbeat
        time.sleep(0.5)
        assert lock_holder(store).heartbeat > before


def test_only_one_of_many_racers_takes_a_stale_lock(tmp_path):
    store = tmp_path / "s.zarr"
    _write_lock(store, pid=_dead_pid())
    won, lost = [], []
    start = threading.Barrier(8)

    def race(k):
        start.wait()
        try:
            won.append(StoreLock(str(store), f"racer-{k}").acquire())
        except StoreError:
            lost.append(k)

    threads = [threading.Thread(target=race, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(won) == 1 and len(lost) == 7
        assert lock_holder(str(store)).run_id == won[0].run_id
    finally:
        for lock in won:
            lock.release()


def test_a_takeover_waits_for_a_live_taker_and_not_for_a_killed_one(tmp_path):
    """The local takeover guard is a kernel lock (filelock): held, it keeps a second taker
    out; its holder killed mid-takeover, it is gone at once (no file left to age out)."""
    store = tmp_path / "s.zarr"
    _write_lock(store, pid=_dead_pid())
    taker = subprocess.Popen([sys.executable, "-c", "import filelock, time; "
                              f"guard = filelock.FileLock({str(store) + '.lock.takeover'!r}); guard.acquire(); "
                              "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert taker.stdout.readline().strip() == "held"
        racer = threading.Thread(target=lambda: won.append(StoreLock(str(store), "run-b").acquire()))
        won: list[StoreLock] = []
        racer.start()
        racer.join(1.0)
        assert racer.is_alive() and not won  # the live taker's guard keeps run-b out
        t0 = time.time()
        taker.kill()
        racer.join(10)
        assert won and time.time() - t0 < 5
        assert lock_holder(str(store)).run_id == "run-b"
    finally:
        taker.kill()
        taker.wait()
        for lock in won:
            lock.release()


def test_unwritable_parent_is_one_line(tmp_path):
    with pytest.raises(StoreError, match=r"s.zarr.lock: cannot create the store lock"):
        StoreLock(str(tmp_path / "missing" / "s.zarr"), "run-a").acquire()


@pytest.fixture
def s3_options():
    """An S3-compatible server (moto) on 127.0.0.1 with a bucket ``locks``."""
    import shutil
    import urllib.request

    import s3fs

    exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": url}}
        s3fs.S3FileSystem(**opts).mkdir("locks")
        yield opts
    finally:
        proc.terminate()
        proc.wait(10)


def test_s3_lock_object_is_exclusive_and_stale_ones_are_taken_over(s3_options):
    import s3fs

    store = "s3://locks/s.zarr"
    with StoreLock(store, "run-a", storage_options=s3_options):
        assert lock_holder(store, s3_options).run_id == "run-a"
        with pytest.raises(StoreError, match="in use by run run-a"):
            StoreLock(store, "run-b", storage_options=s3_options).acquire()
    assert lock_holder(store, s3_options) is None
    fs = s3fs.S3FileSystem(**s3_options)
    fs.pipe("locks/s.zarr.lock", json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "pid_start": None,
                                             "started": time.time(), "run_id": "killed"}).encode())
    fs.invalidate_cache()
    with StoreLock(store, "run-b", storage_options=s3_options) as lock:
        assert "took over the lock of run killed" in lock.took_over
        assert lock_holder(store, s3_options).run_id == "run-b"
