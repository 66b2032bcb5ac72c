"""A Ctrl-C that Python swallows (raised inside a ``__del__`` or a callback, where it is only
printed) still stops `vtr extract`: it is raised again until the command has caught one."""
import signal
import time

import pytest

from vtr.commands.extract import _ctrl_c_sticks


def test_a_swallowed_ctrl_c_is_raised_again_until_caught():
    before = signal.getsignal(signal.SIGINT)
    with _ctrl_c_sticks() as handled:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what CPython does with it inside a __del__
        t = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            while time.monotonic() - t < 5:
                time.sleep(0.02)
        handled.set()
        assert time.monotonic() - t < 2
    assert signal.getsignal(signal.SIGINT) is before
    time.sleep(1.2)  # the repeater has stopped: nothing more arrives
