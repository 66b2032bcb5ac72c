"""The `vtr` command: one Typer app; every command group lives in ``vtr/commands/``."""
from __future__ import annotations

import importlib
import os

import typer

# Never reach for a hub or send telemetry from a research box (set before any import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(help="vtr: feature cache and fast heads for audio-visual text-video retrieval.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

# One module per command group; each defines ``register(app)``. A missing module is a bug,
# so nothing here swallows an ImportError.
COMMAND_MODULES = ("store", "sample_data", "media", "encode", "extract", "deploy", "train", "demo", "search")

for _name in COMMAND_MODULES:
    importlib.import_module(f"vtr.commands.{_name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
