"""The one error type of the media side: every decode/probe/encode failure becomes a
``MediaError`` whose text is a single line ``PATH: cause`` (what the store records)."""
from __future__ import annotations

import os


def one_line(text: object, limit: int = 300) -> str:
    """Collapse tool output (ffmpeg stderr, tracebacks) to one short line."""
    s = " ".join(str(text).split())
    # urllib3/yt-dlp append the whole exception chain: the first cause is the message
    s = s.split(" (caused by ")[0]
    return s if len(s) <= limit else s[: limit - 3] + "..."


class MediaError(Exception):
    """A media file could not be used; ``str()`` is ``"PATH: cause"`` on one line."""

    def __init__(self, path: str | os.PathLike, cause: object):
        self.path = os.fspath(path)
        text = one_line(cause)
        # ffmpeg repeats the path; the longer form first, or stripping the relative one
        # would leave the working directory behind
        for p in sorted({self.path, os.path.abspath(self.path)}, key=len, reverse=True):
            text = text.replace(f"{p}: ", "")
        self.cause = text or "unknown error"
        super().__init__(f"{self.path}: {self.cause}")

    def __reduce__(self):  # survive pickling across process pools
        return (type(self), (self.path, self.cause))
