"""`vtr store ...`: look at, check and export a feature store."""
from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Inspect, check and export a feature store.", no_args_is_help=True)


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(1)


@app.command("info")
def info_cmd(path: str = typer.Argument(..., help="store path or fsspec URL"),
             as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Sizes, counts, done/missing/failed per step, provenance and failures."""
    from storage.info import format_info, store_info
    from storage.store import StoreError
    try:
        info = store_info(path)
    except StoreError as e:
        _fail(e)
    typer.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@app.command("check")
def check_cmd(path: str) -> None:
    """Schema and consistency: masks against data, caption indices, no NaN in done items."""
    from storage.check import check_store
    from storage.store import StoreError
    try:
        problems = check_store(path)
    except StoreError as e:
        _fail(e)
    if problems:
        for p in problems:
            typer.echo(f"problem: {p}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{path}: consistent")


@app.command("export-h5")
def export_cmd(path: str, out: Path,
               overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing OUT")) -> None:
    """Write the store as one HDF5 file with the same variable names."""
    from storage.export import export_h5
    from storage.store import StoreError
    try:
        export_h5(path, out, overwrite=overwrite, progress=True)
    except StoreError as e:
        _fail(e)
    typer.echo(f"wrote {out}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="store")
