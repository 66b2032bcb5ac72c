"""`vtr store ...`: look at, check, upgrade and export a feature store."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from vtr.errors import one_line_errors

app = typer.Typer(help="Inspect, check, upgrade and export a feature store.", no_args_is_help=True)


def _command(name: str):
    return lambda fn: app.command(name)(one_line_errors(fn))


@_command("info")
def info_cmd(path: str = typer.Argument(..., help="store path or fsspec URL"),
             as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Sizes, counts, done/missing/failed per step, provenance and failures."""
    from storage.info import format_info, store_info

    info = store_info(path)
    typer.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@_command("check")
def check_cmd(path: str,
              repair: bool = typer.Option(False, "--repair", help="mark the items of lost or corrupt chunks "
                                          "missing, so the next `vtr extract` redoes them")) -> None:
    """Schema and consistency: chunk checksums, done items' chunks present, masks against
    data, caption indices, no NaN in done items."""
    from storage.check import check_store, repair_store

    problems = check_store(path)
    if problems and repair:
        for line in repair_store(path):
            typer.echo(f"repaired: {line}")
        problems = check_store(path)
    if problems:
        for p in problems:
            typer.echo(f"problem: {p}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{path}: consistent")


@_command("upgrade")
def upgrade_cmd(path: str = typer.Argument(..., help="store path or fsspec URL")) -> None:
    """Bring a store written by an older vtr to the current schema, in place (safe to re-run
    after an interruption)."""
    from storage.schema import SCHEMA_VERSION
    from storage.upgrade import upgrade_store

    changes = upgrade_store(path)
    for c in changes:
        typer.echo(c)
    typer.echo(f"{path}: schema version {SCHEMA_VERSION}" + ("" if changes else " already"))


@_command("schema")
def schema_cmd(markdown: bool = typer.Option(False, "--markdown", help="a Markdown table (the README's)")) -> None:
    """Every store variable: name, dimensions, dtype, the step that writes it, meaning."""
    from storage.schema import schema_table

    typer.echo(schema_table(markdown=markdown))


@_command("export-h5")
def export_cmd(path: str, out: Path,
               overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing OUT")) -> None:
    """Write the store as one HDF5 file with the same variable names."""
    from storage.export import export_h5

    export_h5(path, out, overwrite=overwrite, progress=True)
    typer.echo(f"wrote {out}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="store")
