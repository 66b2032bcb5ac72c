"""`vtr demo`: the README's main job on the embedded default.

sample dataset (ffmpeg) -> `extract-msrvtt` in Prefect's ephemeral mode -> store summary
-> every head trained on the store with the same seed and budget -> one comparison table.
Everything lands under one folder; a re-run resumes and overwrites nothing.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import typer

REAL_WEIGHTS_HINT = (
    "vtr extract --data-root /path/to/msrvtt --store msrvtt.zarr "
    "--clip-weights /path/to/ViT-B-32.pt --ast-weights /path/to/audioset_10_10_0.4593.pth")


def demo(out: Path = typer.Option(Path("demo"), help="working folder (data, store, runs)"),
         n_videos: int = typer.Option(24, "--n-videos", min=4),
         ast_size: str = typer.Option("base", "--ast-size", help="base (the real AST geometry) or tiny (faster)"),
         epochs: int = typer.Option(5, "--epochs", min=1, help="training epochs per head"),
         fresh: bool = typer.Option(False, "--fresh", help="delete OUT first and start over")) -> None:
    """Sample dataset -> feature store (random-init encoders) -> heads -> comparison table."""
    from extractors.sample_data import make_sample_dataset, require_ffmpeg
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
        extract_msrvtt(data_root=str(data), store=str(store), random_init=True, ast_size=ast_size,
                       crawl_retries=0, tag_min_count=3)
    except ExtractError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    typer.echo("")
    typer.echo(format_info(store_info(store)))
    typer.echo("")
    typer.echo(f"[3/3] heads on the cached features -> {out / 'runs'}")
    table = compare_heads(str(store), out / "runs", epochs=epochs)
    (out / "comparison.md").write_text(table + "\n")
    typer.echo("")
    typer.echo(table)
    typer.echo("")
    typer.echo("NOTE: random-init encoders: these numbers are meaningless. With real weights: "
               + REAL_WEIGHTS_HINT)


def compare_heads(store: str, runs: Path, epochs: int, heads: tuple[str, ...] | None = None) -> str:
    """Train each registered head with the same seed and budget; a Markdown table of test
    scores (single-caption protocol), epoch time and trainable parameters. Finished runs
    are kept and re-used."""
    import csv
    import json

    from training.heads import HEADS
    from training.trainer import TrainConfig, load_run, train

    rows = []
    for head in heads or tuple(HEADS):
        run = runs / head
        result_path = run / "test_metrics.json"
        if not result_path.exists():
            train(store, head, str(run), None, TrainConfig(epochs=epochs, batch_size=16, seed=0, device="auto"),
                  log=lambda *a, **k: None)
        test = json.loads(result_path.read_text())
        with open(run / "metrics.csv") as f:
            epoch_s = [float(r["epoch_s"]) for r in csv.DictReader(f)]
        model, _ = load_run(str(run), "cpu")
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        t2v, v2t = test["single"]["t2v"], test["single"]["v2t"]
        rows.append(f"| {head} | {t2v['R1']:.1f} | {t2v['R5']:.1f} | {t2v['R10']:.1f} | {t2v['MdR']:.1f} "
                    f"| {t2v['MnR']:.1f} | {v2t['R1']:.1f} | {v2t['R5']:.1f} | {v2t['MnR']:.1f} "
                    f"| {sum(epoch_s) / max(1, len(epoch_s)):.2f} | {params:,} |")
    head_row = ("| head | t2v R@1 | R@5 | R@10 | MdR | MnR | v2t R@1 | R@5 | MnR | epoch s | params |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|")
    return head_row + "\n" + "\n".join(rows)


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)
