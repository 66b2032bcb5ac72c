"""Ctrl-C that always stops a long command, for `vtr extract` and `vtr demo`."""
from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def ctrl_c_sticks() -> Iterator[None]:
    """A Ctrl-C leaves the block even when its KeyboardInterrupt lands where Python only
    prints it (a ``__del__``, a weakref callback): after the first SIGINT it is raised in the
    main thread again every second until a KeyboardInterrupt (or anything) leaves the block.
    Outside the main thread, where no signal handler can be set, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    left, started = threading.Event(), threading.Event()

    def again() -> None:
        while not left.wait(1.0):
            _thread.interrupt_main(signal.SIGINT)

    def on_sigint(signum, frame):
        if not started.is_set():
            started.set()
            threading.Thread(target=again, name="ctrl-c-again", daemon=True).start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        left.set()
        signal.signal(signal.SIGINT, previous)
