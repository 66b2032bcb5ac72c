"""`vtr demo`: the README's main job on the embedded default.

sample dataset (ffmpeg) -> `extract-msrvtt` on a Prefect server of its own (``flows.server``)
-> store summary
-> `vtr ablate` (every head and distillation form, same seed and budget) -> one table.
Everything lands under one folder; a re-run resumes and overwrites nothing.

The sample's silent videos get their audio from the crawl, over HTTP from a server on
127.0.0.1 that runs for the extraction only: the demo contacts nothing beyond this
machine, and refuses URLs that would (unless the data is the user's own, ``--data-root``).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import typer

from vtr.errors import fail, one_line_errors

REAL_WEIGHTS_HINT = (
    "vtr extract --data-root /path/to/msrvtt --store msrvtt.zarr "
    "--clip-weights /path/to/ViT-B-32.pt --ast-weights /path/to/audioset_10_10_0.4593.pth "
    "&& vtr ablate --store msrvtt.zarr --out ablate")


def _store_urls(store: Path) -> list[str]:
    from storage import as_str, open_group

    if not store.exists():
        return []
    return as_str(open_group(str(store), mode="r")["url"][:]).tolist()


def _refuse_remote(urls: list[str], where: Path) -> None:
    from extractors.sample_server import is_loopback_url

    remote = sorted({u for u in urls if u and not is_loopback_url(u)})
    if remote:
        fail(f"{where}: {len(remote)} URL(s) beyond this machine (e.g. {remote[0]}); the demo "
             "crawls only 127.0.0.1: use --fresh to start over, or --data-root for your own data")


def _port_of(urls: list[str]) -> int:
    """The port of the store's sample URLs: the crawl reads them from the store, so a
    re-run serves there again when the OS still has it free."""
    from extractors.sample_server import is_loopback_url

    return next((urlparse(u).port or 0 for u in urls if u and is_loopback_url(u)), 0)


def demo(out: Path = typer.Option(Path("demo"), help="working folder (data, store, runs)"),
         n_videos: int = typer.Option(24, "--n-videos", min=4, help="videos in the sample dataset"),
         data_root: Path | None = typer.Option(
             None, "--data-root", help="an MSR-VTT-layout folder of your own instead of the sample "
                                       "(its URLs are crawled wherever they point)"),
         ast_size: str = typer.Option("base", "--ast-size", help="base (the real AST geometry) or tiny (faster)"),
         epochs: int = typer.Option(5, "--epochs", min=1, help="training epochs per head"),
         fresh: bool = typer.Option(False, "--fresh", help="delete OUT first and start over")) -> None:
    """Sample dataset -> feature store (random-init encoders) -> ablation of every head -> one table."""
    from extractors.sample_data import make_sample_dataset, require_ffmpeg
    from extractors.sample_server import start_sample_server
    from flows.config import ExtractConfig
    from flows.extract import extract_msrvtt
    from flows.server import prefect_api
    from storage import format_info, store_info
    from vtr.commands.extract import is_user_error

    if fresh and out.exists():
        shutil.rmtree(out)
    try:
        require_ffmpeg()
    except RuntimeError as e:
        fail(e)
    store = out / "msrvtt.zarr"
    options = dict(random_init=True, ast_size=ast_size, tag_min_count=3)
    if data_root is not None:
        typer.echo(f"[1/3] your dataset: {data_root}")
        typer.echo(f"[2/3] extract-msrvtt (Prefect, local server) -> {store}")
        with prefect_api(quiet=is_user_error):
            extract_msrvtt(data_root=str(data_root), store=str(store), config=ExtractConfig(**options))
    else:
        data = out / "data"
        urls = _store_urls(store)
        _refuse_remote(urls, store)
        server = start_sample_server(data, prefer_port=_port_of(urls))
        try:
            typer.echo(f"[1/3] sample dataset -> {data} (silent videos' audio served at {server.url})")
            make_sample_dataset(data, n_videos=n_videos, progress=True, base_url=server.url)
            typer.echo(f"[2/3] extract-msrvtt (Prefect, local server) -> {store}")
            with prefect_api(quiet=is_user_error):
                extract_msrvtt(data_root=str(data), store=str(store),
                               config=ExtractConfig(crawl_retries=0, **options))
        finally:
            server.stop()
    typer.echo("")
    typer.echo(format_info(store_info(store)))
    typer.echo("")
    typer.echo(f"[3/3] vtr ablate: every head on the cached features -> {out / 'ablate'}")
    from training.ablate import run_ablation
    from training.runs import TrainConfig

    result = run_ablation(str(store), str(out / "ablate"), TrainConfig(epochs=epochs, batch_size=16, seed=0),
                          log=lambda m: typer.echo(m, err=True))
    typer.echo("")
    typer.echo(result["markdown"])
    typer.echo("")
    typer.echo(f"wrote {out / 'ablate' / 'ablation.md'}")
    typer.echo("NOTE: random-init encoders: these numbers are meaningless. With real weights: "
               + REAL_WEIGHTS_HINT)


def register(root: typer.Typer) -> None:
    root.command("demo")(one_line_errors(demo))
