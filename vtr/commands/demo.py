"""`vtr demo`: the README's main job, in two acts, then the next steps.

Act 1, the pipeline (a smoke check): sample dataset (ffmpeg) -> the extraction
(``flows.run``, no server) -> store summary -> `vtr ablate` on its random-init features.
Act 2, the heads (where their differences mean something): a planted-structure store
(``training.planted_waver``: a hidden code per video split across frames, audio and tags,
four writers) -> `vtr ablate` -> one table. Next steps: a `vtr search` on the demo store
and its top 3, `vtr report` of act 2's best run, and the command that opens the notebook.
Everything lands under one folder; a re-run resumes and overwrites nothing.

The sample's silent videos get their audio from the crawl, over HTTP from a server on
127.0.0.1 that runs for the extraction only: the demo contacts nothing beyond this
machine, and refuses URLs that would (unless the data is the user's own, ``--data-root``).
"""
from __future__ import annotations

import contextlib
import io
import shlex
import shutil
import sys
from pathlib import Path
from urllib.parse import urlparse

import typer

from vtr.errors import fail, one_line_errors
from vtr.interrupt import ctrl_c_sticks

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


# Act 2's planted store: big enough that the heads' ranking is stable, small enough that
# the whole demo stays within minutes on 2 cores (docs/results.md's table uses 600 videos)
PLANTED_VIDEOS = 240
PLANTED_TRAIN = dict(batch_size=32, lr=1e-3, audio_tokens="pool-tokens-8")


def _planted_store(path: Path, n_videos: int) -> None:
    """The planted store of docs/results.md (``python -m training.planted_waver``), written once:
    into a scratch folder first, so an interrupted demo never leaves half a store."""
    from training.planted_waver import main as write_planted

    if path.exists():
        return
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its "wrote" line names the scratch folder
        write_planted([str(tmp), "--videos", str(n_videos)])
    tmp.rename(path)


def _best(rows: list[dict]) -> dict:
    """The variant with the best test text->video R@1 (single caption), first on ties."""
    return max(rows, key=lambda r: r["test"]["single"]["t2v"]["R1"])


def _next_steps(store: Path, smoke_run: Path, best: dict) -> None:
    """What to try next, with absolute paths (they work from any folder)."""
    from storage import as_str, open_group
    from training.data import select_split
    from training.report import render_report
    from vtr.commands.search import format_results
    from vtr.search import Searcher

    store, smoke_run, bin_dir = store.resolve(), smoke_run.resolve(), Path(sys.executable).parent
    train = select_split(str(store), "train")
    query = str(as_str(open_group(str(store), mode="r")["caption_text"][int(train.captions[0])]))
    typer.echo("")
    typer.echo("== Next steps ==")
    typer.echo("search the demo store for one of its training captions (random-init encoders: the scores "
               "mean little):")
    typer.echo(f"  {bin_dir / 'vtr'} search --store {store} --run {smoke_run} {shlex.quote(query)} -k 3")
    typer.echo(format_results(Searcher(str(store), str(smoke_run)).search(query, k=3)))
    report, _ = render_report(best["run"])
    typer.echo(f"report of act 2's best run ({best['variant']}): {bin_dir / 'vtr'} report "
               f"{Path(best['run']).resolve()}")
    typer.echo(f"  wrote {Path(report).resolve()}")
    notebooks = Path(__file__).resolve().parents[2] / "notebooks"
    typer.echo("open the demo store in the notebook:")
    typer.echo(f"  VTR_STORE={store} VTR_RUN={smoke_run} {bin_dir / 'jupyter'} lab {notebooks / 'inspect_store.ipynb'}")


def _extract(data_root: Path, store: Path, config) -> None:
    """MSR-VTT's extraction, here (``flows.run``): Ctrl-C stops it with exit status 130."""
    from flows.run import read_source, run_extraction

    try:
        with ctrl_c_sticks():
            run_extraction(read_source(config, dataset="msrvtt", data_root=str(data_root)), str(store), config)
    except KeyboardInterrupt:
        fail("interrupted: run the demo again to resume", code=130)


def demo(out: Path = typer.Option(Path("demo"), help="working folder (data, store, runs)"),
         n_videos: int = typer.Option(24, "--n-videos", min=4, help="videos in the sample dataset"),
         data_root: Path | None = typer.Option(
             None, "--data-root", help="an MSR-VTT-layout folder of your own instead of the sample "
                                       "(its URLs are crawled wherever they point)"),
         ast_size: str = typer.Option("base", "--ast-size", help="base (the real AST geometry) or tiny (faster)"),
         epochs: int = typer.Option(5, "--epochs", min=1, help="training epochs per head"),
         planted_videos: int = typer.Option(PLANTED_VIDEOS, "--planted-videos", min=80,
                                            help="videos in act 2's planted-structure store"),
         fresh: bool = typer.Option(False, "--fresh", help="delete OUT first and start over")) -> None:
    """Act 1: sample dataset -> feature store (random-init encoders) -> ablation (a smoke check).
    Act 2: the ablation on a planted-structure store, where the heads' differences mean something.
    Then the next steps: search, report, notebook."""
    from extractors.sample_data import make_sample_dataset, require_ffmpeg
    from extractors.sample_server import start_sample_server
    from flows.config import ExtractConfig
    from storage import format_info, store_info

    if fresh and out.exists():
        shutil.rmtree(out)
    try:
        require_ffmpeg()
    except RuntimeError as e:
        fail(e)
    store = out / "msrvtt.zarr"
    options = dict(random_init=True, ast_size=ast_size, tag_min_count=3)
    urls = _store_urls(store) if data_root is None else []
    _refuse_remote(urls, store)
    typer.echo("== Act 1: the pipeline on a generated sample (a smoke check: random-init encoders) ==")
    if data_root is not None:
        typer.echo(f"[1/4] your dataset: {data_root}")
        typer.echo(f"[2/4] extraction -> {store}")
        _extract(data_root, store, ExtractConfig(**options))
    else:
        data = out / "data"
        server = start_sample_server(data, prefer_port=_port_of(urls))
        try:
            typer.echo(f"[1/4] sample dataset -> {data} (silent videos' audio served at {server.url})")
            make_sample_dataset(data, n_videos=n_videos, progress=True, base_url=server.url)
            typer.echo(f"[2/4] extraction -> {store}")
            _extract(data, store, ExtractConfig(crawl_retries=0, **options))
        finally:
            server.stop()
    typer.echo("")
    typer.echo(format_info(store_info(store)))
    typer.echo("")
    typer.echo(f"[3/4] vtr ablate: every head on the cached features -> {out / 'ablate'} (smoke check)")
    from training.ablate import run_ablation
    from training.runs import TrainConfig

    result = run_ablation(str(store), str(out / "ablate"), TrainConfig(epochs=epochs, batch_size=16, seed=0),
                          log=lambda m: typer.echo(m, err=True))
    typer.echo("")
    typer.echo(result["markdown"])
    typer.echo("")
    typer.echo(f"wrote {out / 'ablate' / 'ablation.md'}")
    typer.echo("NOTE: random-init encoders: these numbers are meaningless (act 1 checks that the pipeline "
               "runs end to end). With real weights: " + REAL_WEIGHTS_HINT)

    typer.echo("")
    typer.echo("== Act 2: the heads on a planted-structure store (here their differences are meaningful) ==")
    planted = out / "planted.zarr"
    typer.echo(f"[4/4] planted store -> {planted} ({planted_videos} videos; a hidden code per video split "
               "across frames, audio and tags; four writers), then vtr ablate -> "
               f"{out / 'planted-ablate'}")
    _planted_store(planted, planted_videos)
    planted_result = run_ablation(str(planted), str(out / "planted-ablate"),
                                  TrainConfig(epochs=epochs, seed=0, **PLANTED_TRAIN),
                                  log=lambda m: typer.echo(m, err=True))
    typer.echo("")
    typer.echo(planted_result["markdown"])
    typer.echo("")
    typer.echo(f"wrote {out / 'planted-ablate' / 'ablation.md'}")
    typer.echo("How to read it: part of each video's code is only in its audio, so the heads that hear "
               "(avigate, avigate+waver) should lead; tags are ranked from the frames, as the tags step ranks "
               "them, so they repeat what the frames hold; the style gaps show which heads a writer's style "
               "throws (docs/results.md, \"The ablation\").")
    _next_steps(store, out / "ablate" / "runs" / "avigate", _best(planted_result["rows"]))


def register(root: typer.Typer) -> None:
    root.command("demo")(one_line_errors(demo))
