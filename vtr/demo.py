"""`vtr demo`: the README's main job on the embedded default (sample data, local store)."""
from __future__ import annotations

import shutil
from pathlib import Path

import typer


def demo(out: Path = typer.Option(Path("demo"), help="working folder (data, store, runs)"),
         n_videos: int = typer.Option(24, "--n-videos", min=4),
         fresh: bool = typer.Option(False, "--fresh", help="delete OUT first and start over")) -> None:
    """Make the sample dataset, create its feature store and describe it."""
    from extractors.annotations import read_msrvtt
    from extractors.sample_data import make_sample_dataset, require_ffmpeg
    from storage import create_store, format_info, store_info
    from storage.store import StoreError

    if fresh and out.exists():
        shutil.rmtree(out)
    try:
        require_ffmpeg()
    except RuntimeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    data, store = out / "data", out / "msrvtt.zarr"
    typer.echo(f"[1/2] sample dataset -> {data}")
    make_sample_dataset(data, n_videos=n_videos, progress=True)
    typer.echo(f"[2/2] feature store  -> {store}")
    if store.exists():
        typer.echo("      (exists: kept, nothing overwritten)")
    else:
        try:
            create_store(store, **read_msrvtt(data).store_kwargs())
        except StoreError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
    typer.echo("")
    typer.echo(format_info(store_info(store)))


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)
