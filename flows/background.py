"""One background thread that runs a step's store writes in order, so the encoder never
waits for a write.

The queue is bounded: when the store is slower than the encoder, the encoder waits for a
free slot instead of piling results up in memory. The first write that fails stops the
thread: the writes queued behind it are dropped (their items stay not done, as after a
crash) and the producer gets the failure at its next ``submit`` or at ``close``.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType

_STOP = object()


class BackgroundWriter:
    """``with BackgroundWriter(describe) as w: w.submit(fn, *args)``: ``fn(*args)`` runs on
    the writer thread. ``describe(args, error)`` turns a failed write into the exception
    the producer sees (one line naming the store and the cause)."""

    def __init__(self, describe: Callable[[tuple, BaseException], Exception], depth: int = 4):
        self._describe = describe
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._work, name="store-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self._error is not None:
                continue  # drain: nothing after a failed write may land in the store
            fn, args = job
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the producer
                self._error = self._describe(args, e)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn: Callable, *args) -> None:
        """Queue ``fn(*args)``; raises the failure of an earlier write instead."""
        self._raise()
        self._queue.put((fn, args))

    def close(self) -> None:
        """Wait for every queued write; raises the first failure."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
            return
        # the producer failed: the results already handed over are still written, and its
        # own error is the one that propagates
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
