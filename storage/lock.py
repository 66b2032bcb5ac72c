"""One run per store: a lock file (or object) beside the store naming its holder.

The lock is ``<store>.lock`` (a sibling, so it can be taken before the store exists and
never becomes part of the Zarr group). It holds JSON: host, pid, the process's start
time (psutil's, so a reused pid is not mistaken for the holder), start time, run id and a
heartbeat. It belongs to the run, not the process: only the flow takes it, and the Dask
workers of that run write under it (block ownership keeps them off each other's chunks).

Taking it is an atomic create: ``O_EXCL`` locally, a conditional put (``If-None-Match``,
s3fs's ``"xb"`` mode) on S3; stores whose filesystem has no exclusive create get a best
effort (write, then read back and compare). A stale lock (holder pid gone on this host,
as psutil sees it, or no heartbeat for ``stale_s`` from another host) is taken over under
a short-lived ``<store>.lock.takeover`` lock (filelock's kernel lock locally, an exclusive
object on S3), so two runs that both see it stale cannot both take it.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Iterator

import filelock
import psutil

from storage.store import StoreError

HEARTBEAT_S = 30.0
STALE_S = 600.0  # a lock from another host with no heartbeat for this long is stale
TAKEOVER_STALE_S = 60.0  # a takeover never takes this long; an older takeover object (S3) crashed


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


def _proc_start(pid: int) -> str | None:
    """The process's start time (seconds since the epoch, as psutil reads it), None where unknown."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return None


def _pid_alive(pid: int, start: str | None) -> bool:
    """Whether ``pid`` still runs and is the process that started at ``start`` (a reused pid is not)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False  # killed, not yet reaped by its parent
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    try:
        return start is None or abs(float(start) - created) < 1.0
    except ValueError:
        return True  # a start recorded in another form: judge by the pid alone


class _Backend:
    """Exclusive create, read, touch and delete of one small file or object."""

    def __init__(self, path: str, storage_options: dict | None):
        self.path = path
        self.remote = "://" in path
        if self.remote:
            import fsspec
            self.fs, self.key = fsspec.core.url_to_fs(path, **(storage_options or {}))

    def create(self, data: bytes) -> bool:
        """Write ``data`` only if nothing is there; False when something is."""
        if not self.remote:
            # written under a private name, then linked: link() fails if the lock exists, and
            # a reader never sees a half-written lock (which would look like a dead holder)
            tmp = f"{self.path}.{uuid.uuid4().hex[:8]}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError as e:
                raise StoreError(f"{self.path}: cannot create the store lock ({e.strerror})") from None
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        try:
            with self.fs.open(self.key, "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (NotImplementedError, ValueError, TypeError):
            pass  # no exclusive create on this filesystem: best effort below
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create the store lock ({e})") from None
        if self.fs.exists(self.key):
            return False
        self.fs.pipe(self.key, data)
        time.sleep(0.2)
        return self.read_bytes() == data

    def read_bytes(self) -> bytes | None:
        try:
            if self.remote:
                return self.fs.cat(self.key)
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def mtime(self) -> float | None:
        """When the object was last written (seconds since the epoch), None when unknown.
        Only object stores need it: their takeover object ages out (locally the takeover
        guard is a kernel lock, gone with its process)."""
        try:
            info = self.fs.info(self.key)
        except FileNotFoundError:
            return None
        m = info.get("LastModified") or info.get("mtime")
        return m.timestamp() if hasattr(m, "timestamp") else float(m) if m else None

    def overwrite(self, data: bytes) -> None:
        if self.remote:
            self.fs.pipe(self.key, data)
            return
        tmp = f"{self.path}.{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path)

    def delete(self) -> None:
        try:
            if self.remote:
                self.fs.rm(self.key)
            else:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


@dataclass
class Holder:
    host: str
    pid: int
    pid_start: str | None
    started: float
    heartbeat: float
    run_id: str

    def describe(self) -> str:
        return f"run {self.run_id} (host {self.host}, pid {self.pid}, started {_iso(self.started)})"

    def stale(self, stale_s: float) -> str | None:
        """Why this holder is gone, or None while it may still run."""
        if self.host == socket.gethostname():
            return None if _pid_alive(self.pid, self.pid_start) else f"pid {self.pid} is gone"
        age = _now() - self.heartbeat
        return f"no heartbeat for {age:.0f} s" if age > stale_s else None


def _parse(data: bytes | None) -> Holder | None:
    if data is None:
        return None
    try:
        d = json.loads(data)
        return Holder(str(d["host"]), int(d["pid"]), d.get("pid_start"), float(d["started"]),
                      float(d.get("heartbeat", d["started"])), str(d["run_id"]))
    except (ValueError, KeyError, TypeError):
        # a holder that died while writing its lock: treat as gone on its own host
        return Holder("?", -1, None, 0.0, 0.0, "?")


class StoreLock:
    """``with StoreLock(store, run_id):`` holds the store for one run.

    A store held by a live run is waited for up to ``wait_s`` seconds, then refused with
    a ``StoreError`` naming the holder.
    """

    def __init__(self, store: str, run_id: str | None = None, *, storage_options: dict | None = None,
                 wait_s: float = 0.0, stale_s: float = STALE_S, heartbeat_s: float = HEARTBEAT_S):
        self.store = str(store).rstrip("/")
        self.path = self.store + ".lock"
        self.run_id = run_id or uuid.uuid4().hex
        self.wait_s, self.stale_s, self.heartbeat_s = wait_s, stale_s, heartbeat_s
        self._lock = _Backend(self.path, storage_options)
        self._takeover = _Backend(self.path + ".takeover", storage_options)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._me: dict | None = None
        self.took_over: str | None = None  # why a stale lock was replaced, if one was

    def _record(self) -> bytes:
        t = _now()
        self._me = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
                    "started": t, "heartbeat": t, "run_id": self.run_id}
        return json.dumps(self._me).encode()

    def acquire(self) -> StoreLock:
        deadline = _now() + self.wait_s
        while True:
            if self._lock.create(self._record()):
                break
            holder = _parse(self._lock.read_bytes())
            if holder is None:
                continue  # released between our create and read: try again
            if holder.run_id == self.run_id:
                raise StoreError(f"{self.store}: this run already holds the store lock {self.path}")
            why = holder.stale(self.stale_s)
            if why and self._take_over(holder, why):
                break
            if not why and _now() >= deadline:
                raise StoreError(f"{self.store}: in use by {holder.describe()}; wait for it to finish "
                                 "(or let this run wait: --lock-wait-s)")
            time.sleep(min(1.0, max(0.05, deadline - _now())) if not why else 0.05)
        self._beat = threading.Thread(target=self._heartbeat, name="store-lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    @contextlib.contextmanager
    def _takeover_lock(self) -> Iterator[bool]:
        """Hold ``<store>.lock.takeover`` while a stale lock is replaced; yields False when
        another run holds it. Locally a kernel lock (filelock: gone with its process, so it
        never goes stale); on S3 an exclusive object, deleted when older than a takeover takes."""
        if not self._lock.remote:
            guard = filelock.FileLock(self.path + ".takeover")
            try:
                guard.acquire(timeout=0)
            except filelock.Timeout:
                yield False
                return
            try:
                yield True
            finally:
                guard.release()
            return
        if not self._takeover.create(json.dumps({"run_id": self.run_id, "at": _now()}).encode()):
            m = self._takeover.mtime()
            if m is not None and _now() - m > TAKEOVER_STALE_S:
                self._takeover.delete()
            yield False
            return
        try:
            yield True
        finally:
            self._takeover.delete()

    def _take_over(self, holder: Holder, why: str) -> bool:
        """Replace a stale lock; False when another run got there first."""
        with self._takeover_lock() as held:
            if not held:
                return False
            # re-read under the takeover lock: the stale holder may have been replaced already
            again = _parse(self._lock.read_bytes())
            if again is not None and (again.run_id, again.pid, again.started) != \
                    (holder.run_id, holder.pid, holder.started):
                return False
            self._lock.delete()
            if not self._lock.create(self._record()):
                return False
            self.took_over = f"took over the lock of {holder.describe()}: {why}"
            return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if self._me is None:
                return
            current = _parse(self._lock.read_bytes())
            if current is None or current.run_id != self.run_id:
                return  # taken over (we were judged stale): never write over the new holder
            self._me["heartbeat"] = _now()
            try:
                self._lock.overwrite(json.dumps(self._me).encode())
            except OSError:
                pass  # a missed beat only matters to another host after stale_s

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        current = _parse(self._lock.read_bytes())
        if current is not None and current.run_id == self.run_id:
            self._lock.delete()
        self._me = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(store: str, storage_options: dict | None = None) -> Holder | None:
    """Who holds ``store``'s lock now (None when nobody)."""
    return _parse(_Backend(str(store).rstrip("/") + ".lock", storage_options).read_bytes())
