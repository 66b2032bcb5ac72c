"""`vtr demo`: the README's main job on the embedded default.

sample dataset (ffmpeg) -> `extract-msrvtt` in Prefect's ephemeral mode -> store summary
-> `vtr ablate` (every head and distillation form, same seed and budget) -> one table.
Everything lands under one folder; a re-run resumes and overwrites nothing.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import typer

REAL_WEIGHTS_HINT = (
    "vtr extract --data-root /path/to/msrvtt --store msrvtt.zarr "
    "--clip-weights /path/to/ViT-B-32.pt --ast-weights /path/to/audioset_10_10_0.4593.pth "
    "&& vtr ablate --store msrvtt.zarr --out ablate")


def demo(out: Path = typer.Option(Path("demo"), help="working folder (data, store, runs)"),
         n_videos: int = typer.Option(24, "--n-videos", min=4),
         ast_size: str = typer.Option("base", "--ast-size", help="base (the real AST geometry) or tiny (faster)"),
         epochs: int = typer.Option(5, "--epochs", min=1, help="training epochs per head"),
         fresh: bool = typer.Option(False, "--fresh", help="delete OUT first and start over")) -> None:
    """Sample dataset -> feature store (random-init encoders) -> ablation of every head -> one table."""
    from extractors.sample_data import make_sample_dataset, require_ffmpeg
    from flows.config import ExtractConfig
    from flows.extract import ExtractError, extract_msrvtt
    from storage import format_info, store_info

    if fresh and out.exists():
        shutil.rmtree(out)
    try:
        require_ffmpeg()
    except RuntimeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    data, store = out / "data", out / "msrvtt.zarr"
    typer.echo(f"[1/3] sample dataset -> {data}")
    make_sample_dataset(data, n_videos=n_videos, progress=True)
    typer.echo(f"[2/3] extract-msrvtt (Prefect, ephemeral) -> {store}")
    typer.echo("      (the sample's YouTube URLs cannot be crawled offline: those videos get no audio)")
    try:
        extract_msrvtt(data_root=str(data), store=str(store),
                       config=ExtractConfig(random_init=True, ast_size=ast_size, crawl_retries=0, tag_min_count=3))
    except ExtractError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    typer.echo("")
    typer.echo(format_info(store_info(store)))
    typer.echo("")
    typer.echo(f"[3/3] vtr ablate: every head on the cached features -> {out / 'ablate'}")
    from training.ablate import run_ablation
    from training.trainer import TrainConfig

    result = run_ablation(str(store), str(out / "ablate"), TrainConfig(epochs=epochs, batch_size=16, seed=0),
                          log=lambda m: typer.echo(m, err=True))
    typer.echo("")
    typer.echo(result["markdown"])
    typer.echo("")
    typer.echo(f"wrote {out / 'ablate' / 'ablation.md'}")
    typer.echo("NOTE: random-init encoders: these numbers are meaningless. With real weights: "
               + REAL_WEIGHTS_HINT)


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)
