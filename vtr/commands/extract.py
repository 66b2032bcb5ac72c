"""`vtr extract`: run the extraction flow locally, optionally on a Dask cluster.

Its Prefect API is a server of its own on a free loopback port, stopped at the end and
killed with the run (``flows.server``), unless PREFECT_API_URL points at a server.

Its extraction flags are generated from ``flows.config.ExtractConfig``'s fields by
``vtr.config_flags`` (``--frame-batch-size`` for ``frame_batch_size``, ...), so each option
and its default live there once.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from extractors.datasets import list_datasets
from flows.config import ExtractConfig
from vtr.config_flags import validated, with_config_flags
from vtr.errors import fail, one_line_errors, user_error_types

# Fields given as one JSON object (fsspec's options nest: client_kwargs.endpoint_url).
JSON_FLAGS = ("storage_options",)


def extract(
    data_root: str | None = typer.Option(None, "--data-root", help="the dataset's folder, in its release layout "
                                         "(README), or an fsspec URL such as s3://bucket/msrvtt; with --manifest: "
                                         "where its relative paths point (default: the manifest's folder)"),
    dataset: str | None = typer.Option(None, "--dataset", help=" | ".join(list_datasets()) + " (default msrvtt); "
                                       "with --manifest: the name the store records"),
    manifest: Path | None = typer.Option(None, "--manifest", help="any dataset as a CSV/JSONL manifest: "
                                         "video_id, path, caption[, split] (README: Datasets)"),
    store: str = typer.Option(..., "--store", help="store path (created if missing, resumed if present) or s3:// URL"),
    dask: str | None = typer.Option(None, "--dask", help="run the block tasks on a Dask cluster: a scheduler "
                                    "address tcp://host:8786, or local:N for a LocalCluster of N workers"),
    options: dict | None = None,
) -> None:
    """Turn a raw dataset folder (or a manifest's videos) into a complete feature store
    (resumable: re-run to continue)."""
    from extractors.datasets import get_dataset
    from flows.extract import extract_dataset
    from flows.server import prefect_api

    if manifest is None:
        if data_root is None:
            fail("--data-root: the dataset's folder is needed (or --manifest FILE)", code=2)
        dataset = dataset or "msrvtt"
        get_dataset(dataset)  # an unknown name fails here, listing the known ones
    config = validated(ExtractConfig, options or {})
    with prefect_api(quiet=is_user_error):
        result = extract_dataset(manifest=None if manifest is None else str(manifest), dataset=dataset,
                                 data_root=data_root, store=store, config=config, dask_address=dask)
    typer.echo(json.dumps(result, indent=2))


def is_user_error(exc: BaseException) -> bool:
    """Reported in one line by ``one_line_errors``: Prefect's console traceback is noise."""
    return isinstance(exc, user_error_types())


def register(root: typer.Typer) -> None:
    root.command("extract")(one_line_errors(with_config_flags(ExtractConfig, extract, into="options",
                                                               json_fields=JSON_FLAGS)))
