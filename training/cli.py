"""`vtr train` and `vtr eval`: learn a head on a store's cached features, score a run."""
from __future__ import annotations

import json
import os

import typer


def _fail(msg: object) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(1)


def _parse_sets(items: list[str]) -> dict:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, true/false)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--set wants key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def train_cmd(
    store: str = typer.Option(..., "--store", help="feature store (Zarr folder)"),
    head: str = typer.Option(..., "--head", help="head name: meanpool | avigate | ..."),
    out: str = typer.Option(..., "--out", help="run folder to create (or continue with --resume)"),
    epochs: int = typer.Option(5, "--epochs"),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(1e-4, "--lr", help="base learning rate (heads scale some groups)"),
    weight_decay: float = typer.Option(0.2, "--weight-decay"),
    warmup: float = typer.Option(0.1, "--warmup", help="fraction of steps of linear warm-up"),
    grad_clip: float = typer.Option(1.0, "--grad-clip"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="fp16 autocast (CUDA only)"),
    audio_tokens: int = typer.Option(32, "--audio-tokens", help="AST tokens pooled to this many"),
    audio_zero_fill: bool = typer.Option(False, "--audio-zero-fill",
                                         help="feed silent videos' zero tokens (the release) instead of masking"),
    stream: str = typer.Option("auto", "--stream", help="auto | memory | dask"),
    sets: list[str] = typer.Option([], "--set", help="head option key=value (repeatable), e.g. fusion_layers=2"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its last epoch"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a retrieval head on the store's train split; select on val; test once."""
    from storage import StoreError
    from training.heads import HEADS, head_option
    from training.metrics import format_report
    from training.trainer import RunError, TrainConfig, train

    overrides = _parse_sets(sets)
    if head not in HEADS:
        _fail(f"unknown head {head!r} (known: {', '.join(sorted(HEADS))})")
    if audio_zero_fill:
        if head_option(head, "audio_zero_fill") is None:
            _fail(f"--audio-zero-fill: head {head!r} reads no audio")
        overrides["audio_zero_fill"] = True
    try:
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                             warmup=warmup, grad_clip=grad_clip, seed=seed, device=device, amp=amp,
                             audio_tokens=audio_tokens, stream=stream)
        result = train(store, head, out, overrides, config, resume=resume, progress=progress,
                       log=lambda m: typer.echo(m, err=True))
    except (StoreError, RunError, KeyError, ValueError, FloatingPointError) as e:
        _fail(e.args[0] if isinstance(e, KeyError) and e.args else e)
    if result["test"] is not None:
        typer.echo(format_report(result["test"], f"test (best epoch {result['best_epoch'] + 1})"))
        typer.echo(f"wrote {os.path.join(out, 'test_metrics.json')}")


def eval_cmd(
    store: str = typer.Option(..., "--store"),
    run: str = typer.Option(..., "--run", help="run folder written by vtr train"),
    split: str = typer.Option("test", "--split", help="train | val | test"),
    device: str = typer.Option("auto", "--device"),
    json_out: str = typer.Option("", "--json", help="where to write the metrics (default RUN/eval_SPLIT.json)"),
    style_shift: bool = typer.Option(False, "--style-shift",
                                     help="also score the store's style-rewritten captions and other writers"),
) -> None:
    """Score a run's best head on one split: a table of R@1/5/10, MdR, MnR, and JSON."""
    from storage import StoreError
    from training.metrics import format_report
    from training.trainer import RunError, evaluate_run

    try:
        report = evaluate_run(store, run, split, device)
        if style_shift:
            from training.style import evaluate_style_shift
            report["style_shift"] = evaluate_style_shift(store, run, split, device)
    except (StoreError, RunError, KeyError, ValueError) as e:
        _fail(e.args[0] if isinstance(e, KeyError) and e.args else e)
    path = json_out or os.path.join(run, f"eval_{split}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    typer.echo(format_report(report, f"{split} ({report['head']})"))
    if style_shift:
        from training.style import format_style_report
        typer.echo(format_style_report(report["style_shift"], "style shift (text->video)"))
    typer.echo(f"wrote {path}")


def ablate_cmd(
    store: str = typer.Option(..., "--store", help="feature store (Zarr folder)"),
    out: str = typer.Option(..., "--out", help="folder for the runs, ablation.md and ablation.json"),
    variants: str = typer.Option("", "--variants", help="comma-separated subset (default: all)"),
    epochs: int = typer.Option(5, "--epochs"),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(1e-4, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    audio_tokens: int = typer.Option(32, "--audio-tokens", help="AST tokens pooled to this many"),
    sets: list[str] = typer.Option([], "--set", help="head option key=value for every head that has it"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train every head (meanpool, avigate, waver x distillation, avigate+waver) with the
    same seed and budget; print and write one comparison table."""
    from storage import StoreError
    from training.ablate import VARIANTS, run_ablation
    from training.trainer import RunError, TrainConfig

    names = [v.strip() for v in variants.split(",") if v.strip()] or list(VARIANTS)
    try:
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                             audio_tokens=audio_tokens)
        result = run_ablation(store, out, config, names, _parse_sets(sets), progress=progress,
                              log=lambda m: typer.echo(m, err=True))
    except (StoreError, RunError, KeyError, ValueError, FloatingPointError) as e:
        _fail(e.args[0] if isinstance(e, KeyError) and e.args else e)
    typer.echo(result["markdown"])
    typer.echo(f"wrote {os.path.join(out, 'ablation.md')} and ablation.json")


def report_cmd(run: str = typer.Argument(..., help="run folder written by vtr train"),
               out: str = typer.Option("", "--out", help="HTML file (default RUN/report.html)")) -> None:
    """One HTML page from a run: test metrics, last epoch, loss / R@1 / R@K / gate plots."""
    from training.report import render_report

    try:
        path = render_report(run, out or None)
    except FileNotFoundError as e:
        _fail(e)
    typer.echo(f"wrote {path}")


def register(root: typer.Typer) -> None:
    root.command("train")(train_cmd)
    root.command("eval")(eval_cmd)
    root.command("report")(report_cmd)
    root.command("ablate")(ablate_cmd)
