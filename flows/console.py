"""Prefect's console without the tracebacks of errors the caller reports in one line."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator


class _QuietFilter(logging.Filter):
    def __init__(self, quiet: Callable[[BaseException], bool]):
        super().__init__()
        self.quiet = quiet

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, BaseException) and self.quiet(exc))


@contextlib.contextmanager
def quiet_prefect_console(quiet: Callable[[BaseException], bool]) -> Iterator[None]:
    """``quiet(exc)`` true: Prefect's console traceback for ``exc`` is left out."""
    import prefect.main  # noqa: F401 - configures Prefect's logging (its console handlers)

    flt = _QuietFilter(quiet)
    # Prefect's console handler sits on the root logger; the flow and task run loggers
    # propagate to it (their own handlers send to the API, which keeps the traceback)
    handlers = {h for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs")
                for h in logging.getLogger(name).handlers if isinstance(h, logging.StreamHandler)}
    for h in handlers:
        h.addFilter(flt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(flt)
