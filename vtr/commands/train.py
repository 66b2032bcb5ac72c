"""`vtr train`, `vtr eval`, `vtr sweep`, `vtr ablate` and `vtr report`.

The training flags of `train`, `sweep` and `ablate` are the fields of
``training.runs.TrainConfig`` (``--epochs``, ``--batch-size``, ``--amp/--no-amp``, ...),
generated from it by ``vtr.config_flags`` so each default is written once, in the dataclass. ``--set key=value``
sets any of them or any option of the heads being trained; ``--recipe`` (``training.recipes``)
sets them first, under the flags and ``--set``.

CLIP initialisation (``training.clip_init``): training may not open checkpoints, so the
CLIP file the store's provenance names is read here, with the extractors' loader.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Optional

import typer

from training.runs import ConfigError, TrainConfig, split_settings
from vtr.config_flags import key_values, with_config_flags
from vtr.errors import one_line_errors

# flags whose name alone says too little
HELP = {
    "lr": "base learning rate (heads scale some groups)",
    "warmup": "fraction of the steps of linear warm-up",
    "device": "auto | cpu | cuda",
    "amp": "autocast on CUDA: bf16 where supported (else fp16 + loss scaling) to train, fp16 to score",
    "resident": ("auto | on | off (hold the train split on the device; auto: on CUDA when it fits half "
                 "its free memory and --stream is auto)"),
    "compile": "torch.compile the training step",
    "audio_tokens": "all | pool-time-N | pool-tokens-N (what the head reads of the AST tokens)",
    "stream": "auto | memory | dask (stream the train split when it exceeds half the RAM)",
    "clip_lr_scale": "lr multiplier of the tensors initialised from CLIP",
    "finetune_clip": "fine-tune CLIP's last K blocks on the store's cached hidden states (vtr extract "
                     "--cache-clip-layers K or more)",
    "clip_lr": "learning rate of the fine-tuned CLIP blocks (the releases: 1e-7)",
    "optimizer": "adamw | bertadam (the releases': no bias correction, cosine over all steps)",
    "grad_clip_scale": "divide gradients by this before clip and step: the releases' DDP average over N GPUs",
    "template_captions": "off | auto | on: train and score on the store's template-wrapped captions",
}

INIT_HELP = ("clip | random: start the head's transformers from the CLIP weights the store's "
             "provenance names, or at random (default: clip when that file is present with its "
             "recorded sha256, else random with a notice)")


def parse_sets(items: list[str]) -> dict:
    """``--set key=value`` pairs; values are read as JSON when they parse (numbers, true/false)."""
    return key_values(items, "--set")


def with_train_flags(fn: Callable) -> Callable:
    """Give ``fn`` one flag per ``TrainConfig`` field; it receives the ones given as the
    dict ``train_flags``."""
    return with_config_flags(TrainConfig, fn, into="train_flags", help=HELP, panel="Training (TrainConfig)")


def train_config(train_flags: dict, train_sets: dict, base: dict | None = None) -> TrainConfig:
    """The ``TrainConfig`` of ``base`` (a recipe's values) under the flags and ``--set``
    values given (a field given both as a flag and with ``--set`` is an error: which one
    counts would be a guess)."""
    both = sorted(set(train_flags) & set(train_sets))
    if both:
        raise ConfigError(f"{', '.join(both)}: given both as a flag and with --set")
    return TrainConfig(**{**(base or {}), **train_flags, **train_sets})


def _log(message: str) -> None:
    typer.echo(message, err=True)


def clip_weights(store: str, init: str | None, log: Callable[[str], None] = _log):
    """The CLIP weights to initialise from (``training.clip_init.ClipWeights``), or None.

    ``init`` None: clip when the store's recorded file is present with the recorded
    sha256, else random with a one-line notice. ``"clip"``: that file or an error naming
    it. ``"random"``: None."""
    from extractors.weights import WeightsError, load_state_dict, strip_prefix
    from training.clip_init import ClipWeights, recorded_clip_weights

    if init not in (None, "clip", "random"):
        raise ConfigError(f"--init must be clip or random, not {init!r}")
    if init == "random":
        return None
    recorded = recorded_clip_weights(store)
    if recorded is None:
        why = f"{store}: its features were not made with a CLIP weights file (RANDOM-INIT or none recorded)"
        if init == "clip":
            raise ConfigError(f"--init clip: {why}")
        log(f"note: {why}; the head's transformers start at random")
        return None
    path, sha256 = recorded
    try:
        ckpt = load_state_dict(path, sha256)
    except WeightsError as e:
        if init == "clip":
            raise WeightsError(e.path, f"--init clip: {e.cause}") from None
        log(f"note: {e}; the head's transformers start at random (--init clip makes this an error)")
        return None
    return ClipWeights(ckpt.path, ckpt.sha256, strip_prefix(ckpt.state_dict, "module."))


def finetune_weights(store: str, clip=None):
    """The CLIP weights whose last blocks ``--finetune-clip`` trains: the file the store's
    provenance names, refused in one line when missing, random-init or of another sha256."""
    from extractors.weights import load_state_dict, strip_prefix
    from training.clip_init import ClipWeights, recorded_clip_weights

    if clip is not None:  # already read for --init clip: the same recorded file and hash
        return clip
    recorded = recorded_clip_weights(store)
    if recorded is None:
        raise ConfigError(f"--finetune-clip: {store}'s features were not made with a CLIP weights file "
                          "(RANDOM-INIT or none recorded)")
    ckpt = load_state_dict(*recorded)  # WeightsError (one line) when the sha256 differs
    return ClipWeights(ckpt.path, ckpt.sha256, strip_prefix(ckpt.state_dict, "module."))


def merged_settings(head: str | None, recipe: str | None, sets: list[str],
                    train_flags: dict) -> tuple[str, TrainConfig, dict]:
    """``(head, TrainConfig, head overrides)`` of recipe < flags < ``--set`` (a field given
    both as a flag and with ``--set`` is an error)."""
    from training.heads import HEADS
    from training.recipes import load_recipe

    rec = load_recipe(recipe) if recipe else None
    if rec is not None and head is not None and head != rec.head:
        raise ConfigError(f"--recipe {recipe} trains head {rec.head!r}, not --head {head!r}")
    head = head or (rec.head if rec else None)
    if head is None:
        raise ConfigError("give --head or --recipe")
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r} (known: {', '.join(sorted(HEADS))})")
    train_sets, overrides = split_settings(parse_sets(sets), [head])
    config = train_config(train_flags, train_sets, rec.train if rec else None)
    return head, config, {**(rec.head_options if rec else {}), **overrides}


def train_cmd(
    store: Optional[str] = typer.Option(None, "--store", help="feature store (Zarr folder); with --print-config: "
                                                              "whose widths the head is shown at (optional)"),
    head: Optional[str] = typer.Option(None, "--head", help="head name: meanpool | avigate | ... "
                                                            "(default: the recipe's)"),
    out: str = typer.Option("", "--out", help="run folder to create (or continue with --resume)"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="a release's training settings: "
                                                                "avigate-msrvtt | waver-msrvtt | clip4clip-meanpool"),
    init: Optional[str] = typer.Option(None, "--init", help=INIT_HELP),
    print_config: bool = typer.Option(False, "--print-config",
                                      help="print the merged config (recipe < flags < --set) and exit"),
    audio_zero_fill: bool = typer.Option(False, "--audio-zero-fill",
                                         help="feed silent videos' zero tokens (the release) instead of masking"),
    sets: list[str] = typer.Option([], "--set", help="training or head option key=value (repeatable), "
                                                     "e.g. fusion_layers=2"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its last epoch"),
    allow_silent: bool = typer.Option(False, "--allow-silent",
                                      help="train a head that reads audio on a store whose audio step never "
                                           "ran (zero audio; the run's config records a warning)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    train_flags: dict | None = None,
) -> None:
    """Train a retrieval head on the store's train split; select on val; test once."""
    from training.heads import head_option
    from training.metrics import format_report
    from training.trainer import train

    head, config, overrides = merged_settings(head, recipe, sets, train_flags or {})
    if audio_zero_fill:
        if head_option(head, "audio_zero_fill") is None:
            raise ConfigError(f"--audio-zero-fill: head {head!r} reads no audio")
        overrides["audio_zero_fill"] = True
    if print_config:
        typer.echo(json.dumps(merged_config(store, head, recipe, config, overrides), indent=2))
        return
    if not store:
        raise ConfigError("--store is required (the feature store to train on)")
    if not out:
        raise ConfigError("--out is required (the run folder)")
    if resume:
        check_resume(out, {**(train_flags or {}), **parse_sets(sets)})
    if config.finetune_clip and not resume:
        from training.clip_finetune import check_finetune
        check_finetune(store, config.finetune_clip)  # before the file is read and hashed
    clip = None if resume else clip_weights(store, init)
    tail = finetune_weights(store, clip) if config.finetune_clip and not resume else None
    result = train(store, head, out, overrides, config, resume=resume, progress=progress, log=_log, clip=clip,
                   allow_silent=allow_silent, tail_clip=tail)
    if result["test"] is not None:
        typer.echo(format_report(result["test"], f"test (best epoch {result['best_epoch'] + 1})"))
        typer.echo(f"wrote {os.path.join(out, 'test_metrics.json')}")


def check_resume(out: str, given: dict) -> None:
    """``--resume`` continues the run as it was configured: a given flag or ``--set`` that
    differs from the saved config is refused in one line, unless it only says how the run
    executes (``RESUME_MAY_CHANGE``: applied, and said so, by the trainer)."""
    from training.runs import read_config
    from training.trainer import RESUME_MAY_CHANGE

    saved = read_config(out)
    known = {**saved.get("head_config", {}), **saved["train"]}
    diffs = [f"{k}={v!r} (the run has {known[k]!r})" for k, v in given.items()
             if k in known and known[k] != v and k not in RESUME_MAY_CHANGE]
    if diffs:
        raise ConfigError(f"{out}: --resume keeps the run's saved settings, and {', '.join(diffs)} "
                          f"differ; start a new --out to train with them")


def merged_config(store: str | None, head: str, recipe: str | None, config: TrainConfig, overrides: dict) -> dict:
    """What ``--print-config`` shows: the head's full config (on this store's widths, as the
    trainer builds it, or on the head's defaults without a store) and the ``TrainConfig``."""
    from storage import layout_of
    from training.heads import head_config

    dims = {}
    if store:
        layout = layout_of(store)
        dims = {"dim": layout.dim, "audio_dim": layout.audio_dim, "max_frames": layout.n_frames}
    try:
        hc = head_config(head, overrides, **dims)
    except (KeyError, ValueError) as e:
        raise ConfigError(e.args[0] if e.args else str(e)) from None
    return {"head": head, "recipe": recipe, "widths": {"from": store or "the head's defaults", **dims},
            "head_config": dataclasses.asdict(hc), "train": dataclasses.asdict(config)}


def sweep_cmd(
    store: str = typer.Option(..., "--store", help="feature store (Zarr folder)"),
    head: Optional[str] = typer.Option(None, "--head", help="head name (default: the recipe's)"),
    out: str = typer.Option(..., "--out", help="folder for the runs, sweep.json and sweep.md"),
    grid: list[str] = typer.Option(..., "--grid", help="key=v1,v2,... (repeatable): a training or head "
                                                      "option and the values to try"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="settings every run starts from"),
    init: Optional[str] = typer.Option(None, "--init", help=INIT_HELP),
    sets: list[str] = typer.Option([], "--set", help="training or head option key=value for every run"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    train_flags: dict | None = None,
) -> None:
    """Train every setting of a grid, choose the best on val only, score test once for the
    chosen setting; print the table and write sweep.json."""
    from training.sweep import check_grid, run_sweep

    head, config, overrides = merged_settings(head, recipe, sets, train_flags or {})
    settings = parse_grid(grid)
    check_grid(settings, head)  # before the CLIP file is read and hashed
    result = run_sweep(store, head, settings, out, config, overrides, clip=clip_weights(store, init),
                       progress=progress, log=_log)
    typer.echo(result["markdown"])
    typer.echo(f"wrote {os.path.join(out, 'sweep.json')}")


def parse_grid(items: list[str]) -> dict[str, list]:
    """``key=v1,v2`` items as ``{key: [v1, v2]}`` (values read as JSON when they parse)."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--grid wants key=v1,v2,..., got {item!r}")
        if key in grid:
            raise ConfigError(f"--grid {key} given twice")
        grid[key] = [parse_sets([f"v={v}"])["v"] for v in values.split(",")]
    return grid


def eval_cmd(
    store: str = typer.Option(..., "--store"),
    run: str = typer.Option(..., "--run", help="run folder written by vtr train"),
    split: str = typer.Option("test", "--split", help="train | val | test"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    json_out: str = typer.Option("", "--json", help="where to write the metrics (default RUN/eval_SPLIT.json)"),
    style_shift: bool = typer.Option(False, "--style-shift",
                                     help="also score the store's style-rewritten captions and other writers"),
) -> None:
    """Score a run's best head on one split: a table of R@1/5/10, MdR, MnR, and JSON."""
    from training.evaluate import evaluate_run
    from training.metrics import format_report
    from training.style import evaluate_style_shift, format_style_report

    report = evaluate_run(store, run, split, device)
    if style_shift:
        report["style_shift"] = evaluate_style_shift(store, run, split, device)
    path = json_out or os.path.join(run, f"eval_{split}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    typer.echo(format_report(report, f"{split} ({report['head']})"))
    if style_shift:
        typer.echo(format_style_report(report["style_shift"], "style shift (text->video)"))
    typer.echo(f"wrote {path}")


def ablate_cmd(
    store: str = typer.Option(..., "--store", help="feature store (Zarr folder)"),
    out: str = typer.Option(..., "--out", help="folder for the runs, ablation.md and ablation.json"),
    variants: str = typer.Option("", "--variants", help="comma-separated subset (default: all)"),
    sets: list[str] = typer.Option([], "--set", help="training option, or head option for every head "
                                                     "that has it, key=value (repeatable)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    train_flags: dict | None = None,
) -> None:
    """Train every head (meanpool, avigate, waver x distillation, avigate+waver) with the
    same seed and budget; print and write one comparison table."""
    from training.ablate import VARIANTS, run_ablation

    names = [v.strip() for v in variants.split(",") if v.strip()] or list(VARIANTS)
    train_sets, common = split_settings(parse_sets(sets), [VARIANTS[n][0] for n in names if n in VARIANTS])
    config = train_config(train_flags or {}, train_sets)
    result = run_ablation(store, out, config, names, common, progress=progress, log=_log)
    typer.echo(result["markdown"])
    typer.echo(f"wrote {os.path.join(out, 'ablation.md')} and ablation.json")


def report_cmd(run: str = typer.Argument(..., help="run folder written by vtr train"),
               out: str = typer.Option("", "--out", help="HTML file (default RUN/report.html)")) -> None:
    """One HTML page from a run: test metrics, last epoch, loss / R@1 / R@K / gate plots."""
    from training.report import render_report

    path, missing = render_report(run, out or None)
    typer.echo(f"wrote {path}" + (f" (missing: {', '.join(missing)})" if missing else ""))


def register(root: typer.Typer) -> None:
    root.command("train")(one_line_errors(with_train_flags(train_cmd)))
    root.command("eval")(one_line_errors(eval_cmd))
    root.command("sweep")(one_line_errors(with_train_flags(sweep_cmd)))
    root.command("report")(one_line_errors(report_cmd))
    root.command("ablate")(one_line_errors(with_train_flags(ablate_cmd)))
