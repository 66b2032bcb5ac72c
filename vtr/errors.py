"""The one place that turns a user-facing error into one line and exit status 1.

Every command is wrapped by :func:`one_line_errors` when it is registered, so no command
catches these itself. The classes are named by module path and looked up only among
modules already imported: an error of a package that never loaded cannot have been
raised, and `vtr store info` need not import torch to recognise a training error.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable

import typer

# Exceptions whose message is written for the user: one line, naming the file and cause.
USER_ERRORS = (
    "storage.store:StoreError",
    "extractors.errors:MediaError",
    "extractors.annotations:AnnotationError",
    "extractors.weights:WeightsError",
    "flows.errors:ExtractError",
    "training.runs:RunError",
    "vtr.search:SearchError",
    "vtr.commands.encode:InputError",
    "vtr.config_flags:FlagError",
)


def user_error_types() -> tuple[type[BaseException], ...]:
    found = []
    for ref in USER_ERRORS:
        module, _, name = ref.partition(":")
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def fail(message: object, code: int = 1) -> None:
    """Print ``error: <first line of message>`` to stderr and leave with ``code``."""
    text = str(message).strip().splitlines()
    typer.echo(f"error: {text[0] if text else message}", err=True)
    raise typer.Exit(code)


def one_line_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised unless it is a user error
            if isinstance(e, user_error_types()):
                fail(e, code=getattr(e, "exit_code", 1))
            raise
    return wrapper
