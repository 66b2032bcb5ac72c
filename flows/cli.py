"""`vtr extract`: run the extraction flow locally (Prefect's ephemeral API unless
PREFECT_API_URL points at a server), optionally on a Dask cluster."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from flows.steps import ALL_STEPS


def extract(
    data_root: Path = typer.Option(..., "--data-root", help="MSR-VTT folder (MSRVTT_data.json, csv files, videos/all)"),
    store: str = typer.Option(..., "--store", help="store path (created if missing, resumed if present) or s3:// URL"),
    clip_model: str = typer.Option("ViT-B-32", "--clip-model", help="ViT-B-32 or ViT-B-16"),
    clip_weights: str | None = typer.Option(None, "--clip-weights", help="OpenAI .pt, or open_clip .bin/.safetensors"),
    ast_weights: str | None = typer.Option(None, "--ast-weights", help="audioset_10_10_0.4593.pth or a Hugging Face folder"),
    random_init: bool = typer.Option(False, "--random-init", help="random encoder weights (tests, demos; flagged RANDOM-INIT)"),
    ast_size: str = typer.Option("base", "--ast-size", help="base (DeiT-base-384) or tiny (random weights only)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    steps: str = typer.Option(",".join(ALL_STEPS), "--steps", help="comma-separated subset, in any order"),
    media_dir: str | None = typer.Option(None, "--media-dir", help="where compressed videos and crawled audio go (default STORE.media)"),
    allow_file_urls: bool = typer.Option(False, "--allow-file-urls", help="let the crawl read file:// URLs"),
    crawl_retries: int = typer.Option(3, "--crawl-retries", min=0, help="extra attempts per URL, with back-off"),
    workers: int = typer.Option(2, "--workers", min=1, help="decode/compress worker processes per task"),
    frame_batch_size: int = typer.Option(64, "--frame-batch-size", min=1),
    audio_batch_size: int = typer.Option(8, "--audio-batch-size", min=1),
    text_batch_size: int = typer.Option(256, "--text-batch-size", min=1),
    tag_min_count: int = typer.Option(5, "--tag-min-count", min=1, help="a phrase needs this many training captions"),
    video_chunk: int = typer.Option(256, "--video-chunk", min=1, help="videos per store chunk = per task (new stores only)"),
    dask: str | None = typer.Option(None, "--dask", help="'local' for a LocalCluster, or a scheduler address tcp://host:8786"),
    dask_workers: int = typer.Option(2, "--dask-workers", min=1, help="LocalCluster workers"),
    gpu_per_worker: bool = typer.Option(False, "--gpu-per-worker", help="model tasks need a worker with resources GPU=1"),
) -> None:
    """Turn a raw MSR-VTT folder into a complete feature store (resumable: re-run to continue)."""
    from flows.extract import ExtractError, extract_msrvtt, task_runner

    step_list = [s.strip() for s in steps.split(",") if s.strip()]
    bad = [s for s in step_list if s not in ALL_STEPS]
    if bad:
        typer.echo(f"error: unknown step(s) {', '.join(bad)} (steps: {', '.join(ALL_STEPS)})", err=True)
        raise typer.Exit(2)
    runner = task_runner(dask, dask_workers, gpu_per_worker)
    fl = extract_msrvtt.with_options(task_runner=runner) if runner is not None else extract_msrvtt
    try:
        result = fl(data_root=str(data_root), store=store, clip_model=clip_model, clip_weights=clip_weights,
                    ast_weights=ast_weights, ast_size=ast_size, random_init=random_init, device=device,
                    steps=step_list, media_dir=media_dir, allow_file_urls=allow_file_urls,
                    crawl_retries=crawl_retries, workers=workers,
                    frame_batch_size=frame_batch_size, audio_batch_size=audio_batch_size,
                    text_batch_size=text_batch_size, tag_min_count=tag_min_count, video_chunk=video_chunk,
                    gpu_resources=gpu_per_worker)
    except ExtractError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(result, indent=2))


def register(root: typer.Typer) -> None:
    root.command("extract")(extract)
