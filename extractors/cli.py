"""Extractor commands: `vtr sample-data`, and the `media` and `encode` groups."""
from __future__ import annotations

from pathlib import Path

import typer


def sample_data(out: Path = typer.Argument(..., help="folder to write the dataset into"),
                n_videos: int = typer.Option(24, "--n-videos", min=4, help="how many videos"),
                seed: int = typer.Option(0, help="same seed, same dataset")) -> None:
    """Write a small synthetic dataset in the real MSR-VTT layout (videos made with ffmpeg)."""
    from extractors.sample_data import make_sample_dataset, require_ffmpeg
    try:
        require_ffmpeg()
    except RuntimeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    make_sample_dataset(out, n_videos=n_videos, seed=seed, progress=True)
    typer.echo(f"wrote {n_videos} videos and MSR-VTT annotations under {out}")


