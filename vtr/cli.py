"""The `vtr` command: one Typer app; every command group lives in ``vtr/commands/``."""
from __future__ import annotations

import os

# Never reach for a hub or send telemetry from a research box (set before any import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import typer  # noqa: E402

# Imported by name, not by a loop over strings, so import-linter (and a reader) sees each
# arrow from the CLI to the command modules. Each module defines ``register(app)``.
from vtr.commands import (  # noqa: E402
    demo,
    deploy,
    encode,
    extract,
    media,
    sample_data,
    search,
    store,
    train,
)

app = typer.Typer(help="vtr: feature cache and fast heads for audio-visual text-video retrieval.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

COMMAND_MODULES = (store, sample_data, media, encode, extract, deploy, train, demo, search)

for _module in COMMAND_MODULES:
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
