"""A Ctrl-C that Python swallows (raised inside a ``__del__`` or a callback, where it is only
printed) still stops `vtr extract` and `vtr demo`'s extraction: it is raised again until a
KeyboardInterrupt leaves the run."""
import signal
import time

import pytest
import typer
from typer.testing import CliRunner

import flows.run
from vtr.cli import app
from vtr.commands.demo import _extract
from vtr.interrupt import ctrl_c_sticks

# the __del__ that swallows the first Ctrl-C is reported by pytest as unraisable: that is the point
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class _SwallowsCtrlC:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # CPython prints the KeyboardInterrupt and goes on


def _run_that_swallows_the_first_ctrl_c(*args, **kwargs):
    _SwallowsCtrlC()
    t = time.monotonic()
    while time.monotonic() - t < 10:
        time.sleep(0.02)
    raise AssertionError("the run was not stopped")


def test_a_swallowed_ctrl_c_is_raised_again_until_caught():
    before = signal.getsignal(signal.SIGINT)
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_sticks():
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # swallowed
            while time.monotonic() - t < 5:
                time.sleep(0.02)
    assert time.monotonic() - t < 2
    assert signal.getsignal(signal.SIGINT) is before
    time.sleep(1.2)  # the repeater has stopped: nothing more arrives


@pytest.fixture
def swallowing_run(monkeypatch):
    monkeypatch.setattr(flows.run, "read_source", lambda *a, **k: None)
    monkeypatch.setattr(flows.run, "run_extraction", _run_that_swallows_the_first_ctrl_c)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)


def test_vtr_extract_stops_on_a_swallowed_ctrl_c(swallowing_run, tmp_path):
    t = time.monotonic()
    r = CliRunner().invoke(app, ["extract", "--data-root", str(tmp_path), "--store", str(tmp_path / "s.zarr")])
    assert r.exit_code == 130, r.output
    assert time.monotonic() - t < 3
    assert "run again to resume" in r.output


def test_the_demos_extraction_stops_on_a_swallowed_ctrl_c(swallowing_run, tmp_path):
    t = time.monotonic()
    with pytest.raises(typer.Exit) as e:
        _extract(tmp_path, tmp_path / "s.zarr", None)
    assert e.value.exit_code == 130
    assert time.monotonic() - t < 3
