"""The flows' user-facing error (listed in ``vtr.errors.USER_ERRORS``)."""


class ExtractError(Exception):
    """A problem found before any heavy work starts (one line, naming the path)."""
