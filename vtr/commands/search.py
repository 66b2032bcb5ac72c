"""`vtr search` and `vtr index`: a text query against a store's videos (``vtr.search``)."""
from __future__ import annotations

import json

import typer

from vtr.errors import one_line_errors


def format_results(results: list[dict]) -> str:
    lines = [f"{'rank':>4}  {'score':>8}  {'id':<14}{'split':<7}path"]
    lines += [f"{r['rank']:>4}  {r['score']:>8.3f}  {r['id']:<14}{r['split']:<7}{r['path']}" for r in results]
    return "\n".join(lines)


def search_cmd(query: str = typer.Argument(..., help="the text to look for, e.g. \"a man is cooking\""),
               store: str = typer.Option(..., "--store", help="feature store the run was trained on"),
               run: str = typer.Option(..., "--run", help="run folder written by vtr train"),
               k: int = typer.Option(5, "-k", "--k", help="how many videos to print"),
               json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
               index: bool = typer.Option(False, "--index",
                                          help="candidates from RUN/index.faiss (vtr index), re-ranked exactly"),
               device: str = typer.Option("cpu", "--device", help="auto | cpu | cuda"),
               checkpoint: str = typer.Option("head", "--checkpoint",
                                              help="head (best epoch on val) or last (last epoch)")) -> None:
    """Top-k videos of the store for a text query, scored by the run's head."""
    from vtr.search import Searcher, index_paths

    searcher = Searcher(store, run, device, checkpoint=checkpoint)
    results = searcher.search(query, k, index_paths(run)[0] if index else None)
    if json_out:
        typer.echo(json.dumps({"query": query, "store": store, "run": run, "results": results}, indent=2))
    else:
        typer.echo(format_results(results))


def index_cmd(store: str = typer.Option(..., "--store"),
              run: str = typer.Option(..., "--run", help="run folder written by vtr train"),
              device: str = typer.Option("cpu", "--device", help="auto | cpu | cuda")) -> None:
    """FAISS index over the run's video vectors (RUN/index.faiss) for `vtr search --index`."""
    from vtr.search import build_index

    typer.echo(f"wrote {build_index(store, run, device)}")


def register(root: typer.Typer) -> None:
    root.command("search")(one_line_errors(search_cmd))
    root.command("index")(one_line_errors(index_cmd))
