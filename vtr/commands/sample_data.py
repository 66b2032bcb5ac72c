"""`vtr sample-data`: a small synthetic dataset in MSR-VTT's layout."""
from __future__ import annotations

from pathlib import Path

import typer

from vtr.errors import fail, one_line_errors


def sample_data(out: Path = typer.Argument(..., help="folder to write the dataset into"),
                n_videos: int = typer.Option(24, "--n-videos", min=4, help="how many videos"),
                seed: int = typer.Option(0, help="same seed, same dataset")) -> None:
    """Write a small synthetic dataset in the real MSR-VTT layout (videos made with ffmpeg)."""
    from extractors.sample_data import make_sample_dataset, require_ffmpeg
    try:
        require_ffmpeg()
    except RuntimeError as e:  # not a vtr error class: ffmpeg is missing from the machine
        fail(e)
    make_sample_dataset(out, n_videos=n_videos, seed=seed, progress=True)
    typer.echo(f"wrote {n_videos} videos and MSR-VTT annotations under {out}")


def register(root: typer.Typer) -> None:
    root.command("sample-data")(one_line_errors(sample_data))
