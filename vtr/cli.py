"""The `vtr` command: each package registers its own sub-commands here."""
from __future__ import annotations

import os

import typer

# Never reach for a hub or send telemetry from a research box (set before any import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(help="vtr: feature cache and fast heads for audio-visual text-video retrieval.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _register() -> None:
    import extractors.cli
    import storage.cli
    for mod in (storage.cli, extractors.cli):
        mod.register(app)
    for name in ("flows.cli", "training.cli", "vtr.demo", "vtr.search"):
        try:
            mod = __import__(name, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        mod.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
