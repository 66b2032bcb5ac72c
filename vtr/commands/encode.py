"""`vtr encode frames|audio|text`: run a frozen encoder over a folder or a list, for
debugging. Prints each item's shapes (or its error) and the throughput; writes nothing.

Inputs: a folder (its video/audio files, sorted), or a list file: one path per line, or a
CSV with a ``path`` column (``caption`` column / one caption per line for ``text``).
Relative paths in a list are taken from the list's folder.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import typer

from flows.config import ExtractConfig
from storage.schema import StoreLayout
from vtr.errors import one_line_errors

app = typer.Typer(help="Run the frozen encoders on files (debugging: shapes and throughput).",
                  no_args_is_help=True)

MEDIA_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".wav", ".mp3", ".m4a",
                  ".flac", ".ogg", ".aac", ".opus"}


class InputError(Exception):
    """A list, folder or encoder choice that cannot be used (one line)."""


def _command():
    return lambda fn: app.command()(one_line_errors(fn))


def _default(option: str):
    """An encoder option's default: the extraction's (``ExtractConfig``), written once there."""
    return ExtractConfig.model_fields[option].default


def _read_list(path: Path, column: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(lines))
        if not rows or column not in rows[0]:
            raise InputError(f"{path}: a CSV list needs a {column!r} column")
        return [r[column] for r in rows]
    return [ln.strip() for ln in lines]


def media_inputs(source: Path) -> list[str]:
    if source.is_dir():
        files = sorted(str(p) for p in source.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES)
        if not files:
            raise InputError(f"{source}: no media files in this folder")
        return files
    if source.is_file():
        return [p if os.path.isabs(p) else str(source.parent / p) for p in _read_list(source, "path")]
    raise InputError(f"{source}: no such file or folder")


def caption_inputs(source: Path) -> list[str]:
    if not source.is_file():
        raise InputError(f"{source}: no such file")
    caps = _read_list(source, "caption")
    if not caps:
        raise InputError(f"{source}: no captions")
    return caps


def _clip(model: str, weights: Path | None, random_init: bool, sha256: str | None, device: str):
    from extractors.clip_encoder import create_clip_encoder

    try:
        return create_clip_encoder(model=model, weights=str(weights) if weights else None, random_init=random_init,
                                   expected_sha256=sha256, device=device)
    except ValueError as e:  # an unknown model name
        raise InputError(str(e)) from None


def _report(kind: str, results, stats, show: int) -> None:
    shown = 0
    for r in results:
        if not r.ok:
            typer.echo(f"[{r.index}] FAILED {r.error}")
            continue
        if shown < show:
            shapes = ", ".join(f"{k} {tuple(getattr(v, 'shape', ()))}" for k, v in r.data.items())
            extra = ""
            if "frame_mask" in r.data:
                extra = f" ({int(r.data['frame_mask'].sum())} frames)"
            elif "has_audio" in r.data:
                extra = "" if r.data["has_audio"] else " (no audio: zeros)"
            elif "caption_mask" in r.data:
                extra = f" ({int(r.data['caption_mask'].sum())} tokens)"
            typer.echo(f"[{r.index}] {shapes}{extra}")
            shown += 1
    typer.echo(f"{kind}: {stats.items} items ({stats.failed} failed), {stats.rows} {kind} rows in "
               f"{stats.seconds:.2f} s = {stats.rows_per_s():.1f} rows/s")


DEVICE = typer.Option(_default("device"), "--device", help="auto | cpu | cuda")
RANDOM = typer.Option(False, "--random-init", help="random weights (tests, demos); features are meaningless")
WORKERS = typer.Option(None, "--workers", min=0, help="decode worker processes (default: the cores, less one per GPU in use)")
SHOW = typer.Option(5, "--show", min=0, help="print the shapes of this many items")


@_command()
def frames(source: Path = typer.Argument(..., help="folder of videos, or a list of paths"),
           clip_model: str = typer.Option(_default("clip_model"), "--clip-model", help="ViT-B-32 | ViT-B-16 (+ -quickgelu)"),
           clip_weights: Path | None = typer.Option(None, "--clip-weights", help="ViT-B-32.pt, .bin or .safetensors"),
           clip_sha256: str | None = typer.Option(None, "--clip-sha256", help="refuse weights with another sha256"),
           random_init: bool = RANDOM, device: str = DEVICE,
           batch_size: int = typer.Option(_default("frame_batch_size"), "--batch-size", min=1, help="frames per model batch"),
           workers: int | None = WORKERS, n_frames: int = typer.Option(StoreLayout.n_frames, "--n-frames", min=1),
           backend: str = typer.Option("decord", "--backend", help="decord | pyav"),
           show: int = SHOW) -> None:
    """CLIP frame features of videos."""
    from extractors.engine import Throughput, encode_frames
    paths = media_inputs(source)
    enc = _clip(clip_model, clip_weights, random_init, clip_sha256, device)
    typer.echo(f"{enc.arch} on {enc.device}: {len(paths)} videos, batch {batch_size}")
    stats = Throughput()
    _report("frame", encode_frames(enc, paths, batch_size=batch_size, workers=workers, n_frames=n_frames,
                                   backend=backend, timeout_s=_default("decode_timeout_s"), stats=stats), stats, show)


@_command()
def audio(source: Path = typer.Argument(..., help="folder of videos/audio files, or a list of paths"),
          ast_weights: Path | None = typer.Option(None, "--ast-weights",
                                                  help="HF directory or audioset_10_10_0.4593.pth"),
          ast_sha256: str | None = typer.Option(None, "--ast-sha256", help="refuse weights with another sha256"),
          random_init: bool = RANDOM, device: str = DEVICE,
          batch_size: int = typer.Option(_default("audio_batch_size"), "--batch-size", min=1, help="clips per model batch"),
          workers: int | None = WORKERS,
          shift: str = typer.Option(_default("fbank_shift"), "--fbank-shift", help="fixed-10ms | fit-1024"),
          show: int = SHOW) -> None:
    """AST tokens of the audio tracks."""
    from extractors.ast_encoder import create_ast_encoder
    from extractors.engine import Throughput, encode_audio
    paths = media_inputs(source)
    try:
        enc = create_ast_encoder(weights=str(ast_weights) if ast_weights else None, random_init=random_init,
                                 expected_sha256=ast_sha256, device=device, fbank_shift=shift)
        fb = enc.config.fbank_config()
    except ValueError as e:  # a geometry or front end the AST cannot take
        raise InputError(str(e)) from None
    typer.echo(f"AST ({enc.config.num_hidden_layers} layers, {enc.n_tokens} tokens) on {enc.device}: "
               f"{len(paths)} files, batch {batch_size}")
    stats = Throughput()
    _report("clip", encode_audio(enc, paths, batch_size=batch_size, workers=workers, fbank_config=fb,
                                 stats=stats), stats, show)


@_command()
def text(source: Path = typer.Argument(..., help="captions: one per line, or a CSV with a caption column"),
         clip_model: str = typer.Option(_default("clip_model"), "--clip-model", help="ViT-B-32 | ViT-B-16 (+ -quickgelu)"),
         clip_weights: Path | None = typer.Option(None, "--clip-weights", help="ViT-B-32.pt, .bin or .safetensors"),
         clip_sha256: str | None = typer.Option(None, "--clip-sha256", help="refuse weights with another sha256"),
         random_init: bool = RANDOM, device: str = DEVICE,
         batch_size: int = typer.Option(_default("text_batch_size"), "--batch-size", min=1, help="captions per model batch"),
         show: int = SHOW) -> None:
    """CLIP caption token features and EOT embeddings."""
    from extractors.engine import Throughput, encode_captions
    caps = caption_inputs(source)
    enc = _clip(clip_model, clip_weights, random_init, clip_sha256, device)
    typer.echo(f"{enc.arch} on {enc.device}: {len(caps)} captions, batch {batch_size}")
    stats = Throughput()
    _report("caption", encode_captions(enc, caps, batch_size=batch_size, stats=stats), stats, show)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="encode")
