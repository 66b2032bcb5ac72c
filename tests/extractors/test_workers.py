"""The one bounded-worker module: a per-item time bound, a dead worker replaced and only its
item failed, workers that ignore SIGINT and die with their parent."""
import os
import signal
import subprocess
import sys
import time

import psutil

from extractors.workers import ordered_map


class Items:
    """Item 1 hangs, item 3 kills its worker, item 4 waits for a SIGINT it ignores."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == 1:
            time.sleep(60)
        if i == 3:
            os._exit(3)
        if i == 4:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        return i * 10


def test_a_hung_item_times_out_a_dead_worker_is_replaced_sigint_is_ignored():
    t = time.monotonic()
    out = list(ordered_map(Items(), 2, lambda i, why: f"failed {i}: {why}", timeout_s=2))
    assert out == [0, "failed 1: timed out after 2 s", 20, "failed 3: decode worker died (exit code 3)", 40, 50]
    assert time.monotonic() - t < 20


CHILD = """
import sys, time
from extractors.workers import ordered_map

class Slow:
    def __len__(self): return 4
    def __getitem__(self, i):
        time.sleep(60)

for r in ordered_map(Slow(), 2, lambda i, why: why):
    pass
"""


def test_workers_die_with_a_sigkilled_parent():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], env={**os.environ, "PYTHONPATH": os.getcwd()})
    kids = []
    try:
        deadline = time.time() + 60
        while len(kids) < 2 and time.time() < deadline:
            kids = psutil.Process(proc.pid).children()
            time.sleep(0.1)
        assert len(kids) == 2
        time.sleep(0.5)  # both hold an item
        proc.kill()
        proc.wait()
        _, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive
    finally:
        for p in [proc, *kids]:
            try:
                p.kill()
            except (OSError, psutil.Error):
                pass
