"""Decode worker processes that outlive a crash: item indices in, results out in input order.

torch's DataLoader cannot lose a worker: its iterator raises "DataLoader worker exited
unexpectedly" (from a SIGCHLD handler, at any point of the main thread) and which item
killed the worker is unknown. Here each worker holds one item at a time, so a worker that
dies (a decoder segfault, the OOM killer) costs exactly its item: that item's result is
``failed(index, why)`` and a fresh worker takes the dead one's place.

Tensors in the results travel as DataLoader's do: through shared memory (torch registers
its reductions with multiprocessing's pickler), not through the pipe.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait
from typing import Any, Protocol


class Items(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Any: ...


def _serve(items: Items, conn) -> None:
    import torch

    # as in DataLoader's workers: the parent's OpenMP team does not survive the fork (a
    # parallel torch op in the child would wait on it forever), and the cores are for the
    # other workers and the model anyway
    torch.set_num_threads(1)
    while True:
        try:
            i = conn.recv()
        except (EOFError, OSError):
            return
        if i is None:
            return
        try:
            conn.send(("ok", items[i]))
        except Exception as e:  # noqa: BLE001 - a bug in one item must not take the worker down
            conn.send(("err", f"{type(e).__name__}: {e}"))


def death_cause(exitcode: int | None) -> str:
    """``"decode worker died (killed by SIGKILL)"`` / ``"(exit code 1)"``."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    return f"decode worker died ({how})"


class _Worker:
    def __init__(self, items: Items):
        # fork, as DataLoader does on Linux: the items object needs no pickling and no
        # re-import of __main__; daemonic, so the decoders bound their time with threads
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_serve, args=(items, child), daemon=True)
        self.proc.start()
        child.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass

    def close(self, timeout_s: float) -> None:
        self.proc.join(timeout_s)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def ordered_map(items: Items, workers: int, failed: Callable[[int, str], Any],
                prefetch: int = 4) -> Iterator[Any]:
    """``items[i]`` for every ``i``, in order, computed in ``workers`` processes (0: in this
    one) with at most ``prefetch`` items per worker ahead of the consumer. An item whose
    worker dies, or whose ``__getitem__`` raises, yields ``failed(i, why)``."""
    n = len(items)
    if workers <= 0:
        for i in range(n):
            try:
                yield items[i]
            except Exception as e:  # noqa: BLE001
                yield failed(i, f"{type(e).__name__}: {e}")
        return
    pool = [_Worker(items) for _ in range(min(workers, n))]
    busy: dict[int, int] = {}      # worker slot -> item it holds
    done: dict[int, Any] = {}      # results that arrived ahead of their turn
    sent = want = 0
    try:
        while want < n:
            for slot in range(len(pool)):
                if slot not in busy and sent < n and sent - want < prefetch * len(pool):
                    pool[slot].conn.send(sent)
                    busy[slot] = sent
                    sent += 1
            if want in done:
                yield done.pop(want)
                want += 1
                continue
            ready = set(wait([pool[s].conn for s in busy] + [pool[s].proc.sentinel for s in busy]))
            for slot in [s for s in busy if pool[s].conn in ready or pool[s].proc.sentinel in ready]:
                i, w = busy.pop(slot), pool[slot]
                try:
                    # a result sent just before the worker died still counts
                    status, value = w.conn.recv() if w.conn.poll() else ("dead", None)
                except Exception:  # noqa: BLE001 - EOF, or shared memory the dead worker took along
                    status, value = "dead", None
                if status == "dead":
                    w.close(5)
                    status, value = "err", death_cause(w.proc.exitcode)
                    pool[slot] = _Worker(items)
                done[i] = value if status == "ok" else failed(i, value)
    finally:
        for w in pool:
            w.stop()
        for w in pool:
            w.close(2)
