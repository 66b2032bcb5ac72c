"""Bounded child work, one way: decode, fbank and compress run in forked worker processes.

A worker holds one item at a time, so a worker that dies (a decoder segfault, the OOM
killer) or overruns its per-item time bound costs exactly its item: that item fails with
the cause, and a fresh worker takes the dead one's place. Workers die with their parent:
Linux SIGKILLs them when the thread that forked them dies (``PR_SET_PDEATHSIG``), even
when that parent was SIGKILLed. They ignore SIGINT: a Ctrl-C reaches the whole process
group, and the parent, not the signal, decides what happens to the item in hand.

Inside a daemonic process (which may not fork children) the same calls run on threads: a
hung item then leaks its thread, but the run goes on.

Tensors in the results travel as torch's DataLoader sends them: through shared memory
(torch registers its reductions with multiprocessing's pickler), not through the pipe.
"""
from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import wait
from typing import Any, Protocol


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_count(cores: int, gpus: int) -> int:
    """The one worker-count rule: every core but one per GPU in use, whose feeding process
    needs its own; at least one."""
    return max(1, cores - gpus)


def can_fork() -> bool:
    """Worker processes here, or threads (daemonic processes may not have children)."""
    return not mp.current_process().daemon


class Items(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Any: ...


class WorkerError(Exception):
    """A call whose worker died or overran its time bound (the message says which)."""


def death_cause(exitcode: int | None, what: str = "decode worker") -> str:
    """``"decode worker died (killed by SIGKILL)"`` / ``"(exit code 1)"``."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    return f"{what} died ({how})"


@functools.cache
def _prctl():
    """libc's prctl, looked up once in the parent (a forked child only calls it)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl
    return None


def die_with_parent(parent: int) -> None:
    """In a freshly forked child: SIGKILL when ``parent`` dies, and leave SIGINT to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    prctl = _prctl()
    if prctl is not None:
        PR_SET_PDEATHSIG = 1
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    else:  # elsewhere a thread watches for the parent's death
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # it died before prctl took
        os._exit(1)


def tool_preexec() -> Callable[[], None]:
    """``preexec_fn`` of a tool's subprocess (ffmpeg, the crawler): it dies with this
    thread (Linux) and leaves SIGINT to this process, which kills it on a Ctrl-C."""
    _prctl()  # resolved here, not between fork and exec
    return functools.partial(die_with_parent, os.getpid())


def _serve(fn: Callable[[Any], Any], conn, parent_end, parent: int, init: Callable[[], None] | None) -> None:
    die_with_parent(parent)
    parent_end.close()  # the fork copied it: without this, a dead parent's pipe never reads EOF
    if "torch" in sys.modules:
        # as in DataLoader's workers: the parent's OpenMP team does not survive the fork (a
        # parallel torch op in the child would wait on it forever), and the cores are for the
        # other workers and the model anyway
        sys.modules["torch"].set_num_threads(1)
    if init is not None:
        init()
    while True:
        try:
            arg = conn.recv()
        except (EOFError, OSError):
            return
        if arg is None:
            return
        try:
            reply = ("ok", fn(arg))
        except Exception as e:  # noqa: BLE001 - a bug in one item must not take the worker down
            reply = ("err", f"{type(e).__name__}: {e}")
        conn.send(reply)


class Worker:
    """One forked child serving ``fn(arg)`` calls, one at a time (``fn`` needs no pickling)."""

    def __init__(self, fn: Callable[[Any], Any], init: Callable[[], None] | None = None, what: str = "worker"):
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_serve, args=(fn, child, self.conn, os.getpid(), init), daemon=True)
        self.proc.start()
        child.close()
        self.owner, self.calls, self.what = os.getpid(), 0, what

    def call(self, arg: Any, timeout_s: float | None) -> tuple[str, Any]:
        """``("ok", fn(arg))`` or ``("err", one line)``; ``WorkerError`` (the worker is gone
        then) when it dies or runs past ``timeout_s``."""
        self.calls += 1
        self.conn.send(arg)
        if not self.conn.poll(timeout_s):
            self.close()
            raise WorkerError(f"timed out after {timeout_s:g} s")
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.close()
            raise WorkerError(death_cause(self.proc.exitcode, self.what)) from None

    def usable(self, max_calls: int | None = None) -> bool:
        return (self.owner == os.getpid() and self.proc.is_alive() and not self.conn.closed
                and (max_calls is None or self.calls < max_calls))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)

    def close(self, grace_s: float = 0.0) -> None:
        """Wait ``grace_s`` for a stopped worker to leave, then kill it."""
        if self.owner != os.getpid():
            return  # inherited through a fork: the parent owns it
        self.proc.join(grace_s)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def call_in_thread(fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()`` on a thread, waited for ``timeout_s`` (``WorkerError`` past it; the thread
    is left behind): the bound where no worker process can be forked."""
    box: dict = {}

    def work() -> None:
        try:
            box["ok"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["err"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise WorkerError(f"timed out after {timeout_s:g} s")
    if "err" in box:
        raise box["err"]
    return box["ok"]


def _guarded(items: Items, i: int, failed: Callable[[int, str], Any]) -> Any:
    try:
        return items[i]
    except Exception as e:  # noqa: BLE001
        return failed(i, f"{type(e).__name__}: {e}")


def ordered_map(items: Items, workers: int, failed: Callable[[int, str], Any], prefetch: int = 4,
                timeout_s: float | None = None, what: str = "decode worker") -> Iterator[Any]:
    """``items[i]`` for every ``i``, in order, computed in ``workers`` processes (0: in this
    one) with at most ``prefetch`` items per worker ahead of the consumer. An item whose
    ``__getitem__`` raises, whose worker dies, or that runs past ``timeout_s`` yields
    ``failed(i, why)``; the dead or overdue worker is replaced."""
    n = len(items)
    if workers <= 0:
        for i in range(n):
            yield _guarded(items, i, failed)
        return
    if not can_fork():
        yield from _thread_map(items, workers, failed, prefetch)
        return
    pool = [Worker(items.__getitem__, what=what) for _ in range(min(workers, n))]
    busy: dict[int, tuple[int, float]] = {}  # worker slot -> (item it holds, when sent)
    done: dict[int, Any] = {}                # results that arrived ahead of their turn
    sent = want = 0
    try:
        while want < n:
            for slot in range(len(pool)):
                if slot not in busy and sent < n and sent - want < prefetch * len(pool):
                    pool[slot].conn.send(sent)
                    busy[slot] = (sent, time.monotonic())
                    sent += 1
            if want in done:
                yield done.pop(want)
                want += 1
                continue
            wait_s = None
            if timeout_s is not None:
                wait_s = max(0.0, min(t for _, t in busy.values()) + timeout_s - time.monotonic())
            ready = set(wait([pool[s].conn for s in busy] + [pool[s].proc.sentinel for s in busy], wait_s))
            now = time.monotonic()
            for slot in list(busy):
                i, t0 = busy[slot]
                w = pool[slot]
                if w.conn in ready or w.proc.sentinel in ready:
                    try:
                        # a result sent just before the worker died still counts
                        status, value = w.conn.recv() if w.conn.poll() else ("dead", None)
                    except Exception:  # noqa: BLE001 - EOF, or shared memory the dead worker took along
                        status, value = "dead", None
                    if status == "dead":
                        w.close(5)
                        status, value = "err", death_cause(w.proc.exitcode, what)
                        pool[slot] = Worker(items.__getitem__, what=what)
                elif timeout_s is not None and now - t0 >= timeout_s:
                    w.close()
                    status, value = "err", f"timed out after {timeout_s:g} s"
                    pool[slot] = Worker(items.__getitem__, what=what)
                else:
                    continue
                del busy[slot]
                done[i] = value if status == "ok" else failed(i, value)
    finally:
        for w in pool:
            w.stop()
        for w in pool:
            w.close(2)


def _thread_map(items: Items, workers: int, failed: Callable[[int, str], Any], prefetch: int) -> Iterator[Any]:
    with ThreadPoolExecutor(workers) as ex:
        ahead: deque = deque()
        for i in range(len(items)):
            ahead.append(ex.submit(_guarded, items, i, failed))
            if len(ahead) >= prefetch * workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
