"""`vtr media ...`: the media steps on single files and folders.

Heavy modules are imported inside the commands so `vtr --help` stays fast. Bad items print
one line on stderr and the batch goes on; the exit status is 1 if anything failed.
"""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from extractors.crawl import SOCKET_TIMEOUT_S
from extractors.fbank import SHIFTS, FbankConfig
from flows.config import ExtractConfig
from storage.schema import StoreLayout
from vtr.errors import one_line_errors

app = typer.Typer(help="Media: probe, crawl missing audio, compress, decode frames, fbank.",
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)

VIDEO_EXTS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp", ".ts"}


class Backend(str, Enum):
    decord = "decord"
    pyav = "pyav"


Shift = Enum("Shift", {s: s for s in SHIFTS}, type=str)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="media")


def _command(name: str | None = None):
    return lambda fn: app.command(name)(one_line_errors(fn))


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    return [path]


def _bar(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=len(items) < 2)


def _run_each(items: list[Path], desc: str, fn) -> int:
    """Call ``fn(item)`` for each; print one line per failure; return the failure count."""
    from extractors.annotations import AnnotationError
    from extractors.errors import MediaError

    failed = 0
    for p in _bar(items, desc):
        try:
            fn(p)
        except (MediaError, AnnotationError, ValueError, OSError) as e:
            failed += 1
            _fail(str(e) if isinstance(e, (MediaError, AnnotationError)) else f"{p}: {e}")
    return failed


@_command()
def probe(path: Path = typer.Argument(..., help="A media file or a folder of videos.")) -> None:
    """Print duration, fps, display size, rotation and stream presence as JSON (one line per
    file for folders)."""
    from extractors.probe import probe as _probe

    items = _inputs(path)
    failed = _run_each(items, "probe", lambda p: typer.echo(json.dumps(_probe(p).to_dict())))
    raise typer.Exit(1 if failed or not items else 0)


@_command()
def compress(src: Path = typer.Argument(..., help="A video or a folder of videos."),
             dst: Path = typer.Argument(..., help="Output file (or folder, for a folder input)."),
             keep_audio: bool = typer.Option(False, "--keep-audio/--drop-audio",
                                             help="Re-encode the audio track as AAC, or drop it."),
             fps: float = typer.Option(3.0, help="Output frame rate."),
             short_side: int = typer.Option(224, help="Short side of the output in pixels."),
             workers: int = typer.Option(0, help="Process pool size (0: one per core).")) -> None:
    """Re-encode to 3 fps, short side 224 (aspect kept), H.264 yuv420p. Existing valid
    outputs are skipped."""
    from extractors.compress import compress_many

    if src.is_dir():
        if dst.exists() and not dst.is_dir():
            _fail(f"{dst}: output must be a folder when the input is a folder")
            raise typer.Exit(2)
        pairs = [(p, dst / (p.stem + ".mp4")) for p in _inputs(src)]
    else:
        pairs = [(src, dst)]
    results = compress_many(pairs, workers=workers or None, progress=len(pairs) > 1,
                            fps=fps, short_side=short_side, keep_audio=keep_audio)
    for r in results:
        if r.status == "failed":
            _fail(r.error)
    n_bad = sum(r.status == "failed" for r in results)
    if len(results) > 1:
        typer.echo(f"compressed {sum(r.status == 'compressed' for r in results)}, skipped "
                   f"{sum(r.status == 'skipped' for r in results)}, failed {n_bad}", err=True)
    raise typer.Exit(1 if n_bad or not results else 0)


@_command("crawl-audio")
def crawl_audio_cmd(
        data_root: Path = typer.Option(..., "--data-root", help="MSR-VTT data root (MSRVTT_data.json, videos/all)."),
        manifest: Path = typer.Option(None, help="A generic CSV/JSONL manifest instead of MSR-VTT files."),
        out_dir: str = typer.Option("audio_crawled", help="Folder for the WAVs, relative to the data root."),
        allow_file_urls: bool = typer.Option(False, help="Also crawl file:// URLs (tests)."),
        retries: int = typer.Option(ExtractConfig().crawl_retries, help="Retries after a failed attempt (permanent errors are not retried)."),
        backoff: float = typer.Option(ExtractConfig().crawl_backoff_s, help="First back-off in seconds (doubles each retry)."),
        timeout: float = typer.Option(ExtractConfig().crawl_timeout_s, help="Wall-clock limit per attempt, seconds."),
        socket_timeout: float = typer.Option(SOCKET_TIMEOUT_S, help="Network read timeout, seconds.")) -> None:
    """For each video without an audio stream, fetch the audio of its URL between its start
    and end time as 16 kHz mono WAV. Prints one JSON line per video and a summary."""
    from extractors.annotations import read_manifest_file, read_msrvtt
    from extractors.crawl import crawl_audio
    from extractors.errors import MediaError
    from extractors.probe import probe as _probe

    m = read_manifest_file(manifest, data_root) if manifest else read_msrvtt(data_root)
    counts = {"original": 0, "crawled": 0, "failed": 0}
    for vid, rel, url, t0, t1 in _bar(list(zip(m.video_ids, m.video_paths, m.urls, m.start_times,
                                                 m.end_times)), "crawl-audio"):
        video = data_root / rel
        rec = {"video_id": vid, "url": url}
        try:
            has_audio = _probe(video).has_audio
        except MediaError as e:
            has_audio, rec["probe_error"] = False, str(e)
        if has_audio:
            rec.update(status="original", path=str(video))
        else:
            r = crawl_audio(url, t0 if t0 >= 0 else None, t1 if t1 >= 0 else None,
                            data_root / out_dir / f"{vid}.wav", allow_file_urls=allow_file_urls,
                            retries=retries, backoff_s=backoff, timeout_s=timeout,
                            socket_timeout_s=socket_timeout)
            rec.update(status=r.status, path=r.path, error=r.error, attempts=r.attempts)
            if r.status == "failed":
                _fail(f"{vid}: crawl failed: {r.error}")
        counts[rec["status"]] += 1
        typer.echo(json.dumps(rec))
    typer.echo(f"videos {m.n_videos}: original audio {counts['original']}, crawled "
               f"{counts['crawled']}, failed {counts['failed']}", err=True)
    raise typer.Exit(1 if counts["failed"] else 0)


def _out_for(src: Path, path: Path, out: Path, suffix: str) -> Path:
    return out / (src.stem + suffix) if path.is_dir() else out


@_command()
def frames(path: Path = typer.Argument(..., help="A video or a folder of videos."),
           out: Path = typer.Option(..., "--out", help="OUT.npy (or a folder for a folder input)."),
           n: int = typer.Option(StoreLayout.n_frames, help="Frame slots."),
           size: int = typer.Option(224, help="Output side after resize and centre crop."),
           backend: Backend = typer.Option(Backend.decord, help="Decoder."),
           timeout: float = typer.Option(ExtractConfig().decode_timeout_s, help="Per-file decode time bound, seconds.")) -> None:
    """Save the sampled frames as uint8 [n, size, size, 3] to OUT.npy and the slot mask
    (bool [n]) to OUT.mask.npy."""
    import numpy as np

    from extractors.frames import load_clip_frames

    if path.is_dir():
        out.mkdir(parents=True, exist_ok=True)

    def one(p: Path):
        x, mask = load_clip_frames(p, n=n, size=size, backend=backend.value, timeout_s=timeout)
        dst = _out_for(p, path, out, ".npy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        np.save(dst, x)
        np.save(dst.with_suffix(".mask.npy"), mask)

    items = _inputs(path)
    raise typer.Exit(1 if _run_each(items, "frames", one) or not items else 0)


@_command()
def fbank(path: Path = typer.Argument(..., help="A media file with audio, or a folder of videos."),
          out: Path = typer.Option(..., "--out", help="OUT.npy (or a folder for a folder input)."),
          shift: Shift = typer.Option(Shift(FbankConfig.shift), help="Frame shift: AST's 10 ms or AVIGATE's fit-1024."),
          mean: float = typer.Option(FbankConfig.mean, help="Normalisation mean (AudioSet)."),
          std: float = typer.Option(FbankConfig.std, help="Normalisation std (AudioSet).")) -> None:
    """Save the normalised Kaldi log-mel fbank, float32 [1024, 128], to OUT.npy."""
    import numpy as np

    from extractors.fbank import load_fbank

    cfg = FbankConfig(shift=shift.value, mean=mean, std=std)
    if path.is_dir():
        out.mkdir(parents=True, exist_ok=True)

    def one(p: Path):
        x = load_fbank(p, cfg)
        dst = _out_for(p, path, out, ".npy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        np.save(dst, x)

    items = _inputs(path)
    raise typer.Exit(1 if _run_each(items, "fbank", one) or not items else 0)
