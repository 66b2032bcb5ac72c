"""`vtr sample-data`: a small synthetic dataset in a real dataset's layout."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from extractors.datasets import list_datasets
from vtr.errors import fail, one_line_errors


def sample_data(out: Path = typer.Argument(..., help="folder to write the dataset into"),
                dataset: str = typer.Option("msrvtt", "--dataset", help=" | ".join(list_datasets())),
                n_videos: Optional[int] = typer.Option(None, "--n-videos", min=4,
                                                       help="how many videos (MSR-VTT only; default 24)"),
                seed: int = typer.Option(0, help="same seed, same dataset")) -> None:
    """Write a small synthetic dataset in a real dataset's layout (videos made with ffmpeg)."""
    from extractors.datasets import get_dataset
    from extractors.sample_data import require_ffmpeg

    spec = get_dataset(dataset)
    try:
        require_ffmpeg()
    except RuntimeError as e:  # not a vtr error class: ffmpeg is missing from the machine
        fail(e)
    if dataset == "msrvtt":
        spec.write_sample(out, seed=seed, progress=True, **({"n_videos": n_videos} if n_videos else {}))
    elif n_videos is not None:
        fail(f"--n-videos: the {spec.title} sample has a fixed size")
    else:
        spec.write_sample(out, seed=seed)
    typer.echo(f"wrote a {spec.title} sample under {out} (extract it with: vtr extract --dataset {dataset} "
               f"--data-root {out} --store STORE)")


def register(root: typer.Typer) -> None:
    root.command("sample-data")(one_line_errors(sample_data))
