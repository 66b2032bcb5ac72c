"""The store lock on object stores, without a server: fsspec filesystems in memory that
behave as S3 does (exclusive create, ``LastModified``), as a filesystem with a float
``mtime`` does, and as one without exclusive create (the best-effort path)."""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import storage.lock as lock_mod
from storage import StoreError
from storage.lock import TAKEOVER_STALE_S, StoreLock, _Backend, lock_holder


class _Memory(MemoryFileSystem):
    """A memory filesystem of its own (its own keys) under its own protocol."""
    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix(f"{cls.protocol}://"))


class ObjectStore(_Memory):
    """S3's view of a key: exclusive create, and ``LastModified`` a datetime (set by the test
    through ``modified`` to age an object)."""
    protocol = "objstore"
    store: dict = {}
    pseudo_dirs = [""]
    modified: dict[str, float] = {}

    @classmethod
    def age(cls, key: str, t: float) -> None:
        """Make ``key`` look last modified at ``t``."""
        cls.modified[cls._strip_protocol(key)] = t

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)  # an exclusive create of an existing key raises here
        if "w" in mode or "x" in mode:
            self.modified.pop(self._strip_protocol(path), None)
        return f

    def pipe_file(self, path, value, **kwargs):
        self.modified.pop(self._strip_protocol(path), None)
        return super().pipe_file(path, value, **kwargs)

    def info(self, path, **kwargs):
        out = dict(super().info(path, **kwargs))
        t = self.modified.get(self._strip_protocol(path), time.time())
        out["LastModified"] = dt.datetime.fromtimestamp(t, dt.timezone.utc)
        return out


class EpochMtime(_Memory):
    """A filesystem whose ``info`` gives ``mtime`` as seconds (sftp, local)."""
    protocol = "epochmtime"
    store: dict = {}
    pseudo_dirs = [""]

    def info(self, path, **kwargs):
        return {**super().info(path, **kwargs), "mtime": 1234.5}


class NoExclusive(_Memory):
    """No exclusive create (``"xb"`` unsupported): the lock falls back to write, then read back."""
    protocol = "noexclusive"
    store: dict = {}
    pseudo_dirs = [""]

    def _open(self, path, mode="rb", **kwargs):
        if "x" in mode:
            raise NotImplementedError("no exclusive create")
        return super()._open(path, mode, **kwargs)


class Broken(_Memory):
    """Every exclusive create fails as a refused request does."""
    protocol = "broken"
    store: dict = {}
    pseudo_dirs = [""]

    def _open(self, path, mode="rb", **kwargs):
        raise PermissionError(13, "Access Denied")


class Guarded(_Memory):
    """A store that opens only with its credentials (``storage_options``)."""
    protocol = "guarded"
    store: dict = {}
    pseudo_dirs = [""]

    def __init__(self, token=None, **kwargs):
        if token != "secret":
            raise PermissionError("guarded: no credentials")
        super().__init__(**kwargs)


for _cls in (ObjectStore, EpochMtime, NoExclusive, Broken, Guarded):
    fsspec.register_implementation(_cls.protocol, _cls, clobber=True)


@pytest.fixture(autouse=True)
def _empty_stores():
    for cls in (ObjectStore, EpochMtime, NoExclusive, Broken, Guarded):
        cls.store.clear()
    ObjectStore.modified.clear()
    yield


def _record(**fields) -> bytes:
    rec = {"host": "elsewhere", "pid": 1, "pid_start": None, "started": time.time(), "heartbeat": time.time(),
           "run_id": "other-run", **fields}
    return json.dumps(rec).encode()


def test_an_object_lock_is_exclusive_names_its_holder_and_goes_with_release():
    store = "objstore://bucket/s.zarr"
    fs = ObjectStore()
    with StoreLock(store, "run-a") as a:
        holder = lock_holder(store)
        assert (holder.run_id, holder.host, holder.pid) == ("run-a", socket.gethostname(), os.getpid())
        assert json.loads(fs.cat("bucket/s.zarr.lock"))["run_id"] == "run-a"
        with pytest.raises(StoreError, match=r"objstore://bucket/s.zarr: in use by run run-a"):
            StoreLock(store, "run-b").acquire()
        with pytest.raises(StoreError, match="this run already holds the store lock objstore://bucket/s.zarr.lock"):
            StoreLock(store, "run-a").acquire()
        assert a.took_over is None
    assert lock_holder(store) is None and not fs.exists("bucket/s.zarr.lock")


def test_an_object_lock_is_kept_fresh_by_its_heartbeat():
    store = "objstore://bucket/s.zarr"
    with StoreLock(store, "run-a", heartbeat_s=0.1):
        before = lock_holder(store)
        time.sleep(0.5)
        after = lock_holder(store)
        assert after.heartbeat > before.heartbeat and after.started == before.started
        assert after.run_id == "run-a"


def test_a_silent_object_lock_is_taken_over_and_the_takeover_object_removed():
    store = "objstore://bucket/s.zarr"
    fs = ObjectStore()
    fs.pipe("bucket/s.zarr.lock", _record(heartbeat=time.time() - 3600))
    with StoreLock(store, "run-b", stale_s=600) as lock:
        assert lock.took_over.startswith("took over the lock of run other-run (host elsewhere, pid 1")
        assert "no heartbeat for 3600 s" in lock.took_over
        assert lock_holder(store).run_id == "run-b"
        assert not fs.exists("bucket/s.zarr.lock.takeover")
    assert not fs.exists("bucket/s.zarr.lock")


def test_a_live_takeover_holds_others_off_and_a_crashed_one_ages_out():
    """Another run is replacing the stale lock (its takeover object is fresh): wait for it.
    A takeover object older than a takeover takes was left by a crash: it is deleted and
    the stale lock taken over."""
    store = "objstore://bucket/s.zarr"
    fs = ObjectStore()
    fs.pipe("bucket/s.zarr.lock", _record(heartbeat=time.time() - 3600))
    fs.pipe("bucket/s.zarr.lock.takeover", b'{"run_id": "taker"}')
    ObjectStore.age("bucket/s.zarr.lock.takeover", time.time() - TAKEOVER_STALE_S + 5)
    won: list[StoreLock] = []
    racer = threading.Thread(target=lambda: won.append(StoreLock(store, "run-b", stale_s=600).acquire()),
                             daemon=True)
    racer.start()
    try:
        racer.join(1.0)
        assert racer.is_alive() and not won and lock_holder(store).run_id == "other-run"
        ObjectStore.age("bucket/s.zarr.lock.takeover", time.time() - TAKEOVER_STALE_S - 0.5)
        racer.join(10)
        assert won and "no heartbeat for" in won[0].took_over
        assert lock_holder(store).run_id == "run-b"
    finally:
        for lock in won:
            lock.release()


def test_a_takeover_that_finds_the_lock_replaced_backs_off():
    """Between judging the lock stale and holding the takeover object, another run took the
    store: its fresh lock is kept, and this run waits for it (then is refused)."""
    store = "objstore://bucket/s.zarr"
    fs = ObjectStore()
    fs.pipe("bucket/s.zarr.lock", _record(heartbeat=time.time() - 3600))
    stale = lock_mod._parse(fs.cat("bucket/s.zarr.lock"))
    fs.pipe("bucket/s.zarr.lock", _record(run_id="winner"))
    lock = StoreLock(store, "run-b", stale_s=600)
    assert lock._take_over(stale, "no heartbeat") is False
    assert lock_holder(store).run_id == "winner" and lock.took_over is None
    assert not fs.exists("bucket/s.zarr.lock.takeover")


def test_object_mtimes_are_read_as_datetimes_and_as_epoch_seconds():
    fs = ObjectStore()
    fs.pipe("bucket/k", b"x")
    ObjectStore.age("bucket/k", 1000.25)
    assert _Backend("objstore://bucket/k", None).mtime() == 1000.25
    assert _Backend("objstore://bucket/missing", None).mtime() is None
    EpochMtime().pipe("bucket/k", b"x")
    assert _Backend("epochmtime://bucket/k", None).mtime() == 1234.5
    plain = _Backend("memory://vtr-lock-test/plain", None)
    plain.fs.pipe(plain.key, b"x")
    try:
        assert plain.mtime() is None  # neither field: unknown
    finally:
        plain.fs.rm(plain.key)


def test_a_filesystem_without_exclusive_create_gets_write_then_read_back(monkeypatch):
    store = "noexclusive://bucket/s.zarr"
    fs = NoExclusive()
    with StoreLock(store, "run-a"):
        assert lock_holder(store).run_id == "run-a"
        with pytest.raises(StoreError, match="in use by run run-a"):
            StoreLock(store, "run-b").acquire()
    assert not fs.exists("bucket/s.zarr.lock")
    # a racer writes its own record while this run waits to read back: this run lost
    backend = _Backend("noexclusive://bucket/race.lock", None)
    monkeypatch.setattr(lock_mod.time, "sleep", lambda s: fs.pipe("bucket/race.lock", b"racer"))
    assert backend.create(b"mine") is False
    assert backend.read_bytes() == b"racer"


def test_a_refused_create_on_an_object_store_is_one_line():
    with pytest.raises(StoreError, match=r"^broken://bucket/s.zarr.lock: cannot create the store lock \(.*Access Denied"):
        StoreLock("broken://bucket/s.zarr", "run-a").acquire()


def test_a_pid_start_in_another_form_judges_by_the_pid_alone(tmp_path):
    rec = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": "Tue 05:00", "started": time.time(),
           "heartbeat": time.time(), "run_id": "live"}
    (tmp_path / "s.zarr.lock").write_text(json.dumps(rec))
    with pytest.raises(StoreError, match="in use by run live"):
        StoreLock(str(tmp_path / "s.zarr"), "run-b").acquire()


def test_the_stores_credentials_reach_the_lock_and_its_reader():
    opts = {"token": "secret", "skip_instance_cache": True}
    with StoreLock("guarded://bucket/s.zarr/", "run-a", storage_options=opts):
        assert lock_holder("guarded://bucket/s.zarr", opts).run_id == "run-a"
        assert Guarded.store  # the lock object is in the guarded store
    with pytest.raises(PermissionError, match="no credentials"):
        lock_holder("guarded://bucket/s.zarr", {"skip_instance_cache": True})
