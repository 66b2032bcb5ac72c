"""`vtr extract`: run the extraction here (``flows.run``: no server, no port), optionally on
a Dask cluster. With PREFECT_API_URL set, or ``--prefect``, it runs the Prefect flow
``extract-dataset`` instead, so the run shows on that server.

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
from vtr.interrupt import ctrl_c_sticks

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
    prefect: bool = typer.Option(False, "--prefect", help="run the Prefect flow extract-dataset on the server "
                                 "at PREFECT_API_URL (the default when that is set)"),
    options: dict | None = None,
) -> None:
    """Turn a raw dataset folder (or a manifest's videos) into a complete feature store
    (resumable: re-run to continue; Ctrl-C stops it with exit status 130)."""
    import os

    from extractors.datasets import get_dataset

    if manifest is None:
        if data_root is None:
            fail("--data-root: the dataset's folder is needed (or --manifest FILE)", code=2)
        dataset = dataset or "msrvtt"
        get_dataset(dataset)  # an unknown name fails here, listing the known ones
    config = validated(ExtractConfig, options or {})
    source = dict(manifest=None if manifest is None else str(manifest), dataset=dataset, data_root=data_root)
    try:
        with ctrl_c_sticks():
            if prefect or os.environ.get("PREFECT_API_URL"):
                result = _run_flow(source, store, config, dask)
            else:
                result = _run_direct(source, store, config, dask)
    except KeyboardInterrupt:
        typer.echo("interrupted: the items finished so far are in the store; run again to resume", err=True)
        raise typer.Exit(130) from None
    typer.echo(json.dumps(result, indent=2))


def _run_direct(source: dict, store: str, config: ExtractConfig, dask: str | None) -> dict:
    import logging

    from flows.run import read_source, run_extraction

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("vtr.extract")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # not twice when something configured the root logger
    manifest = read_source(config, **source)
    if not dask:
        return run_extraction(manifest, store, config)
    from flows.cluster import dask_client

    with dask_client(dask, config.gpu_per_worker) as client:
        return run_extraction(manifest, store, config, client)


def _run_flow(source: dict, store: str, config: ExtractConfig, dask: str | None) -> dict:
    from flows.console import quiet_prefect_console
    from flows.extract import extract_dataset

    with quiet_prefect_console(is_user_error):
        return extract_dataset(**source, store=store, config=config, dask_address=dask)


def is_user_error(exc: BaseException) -> bool:
    """Reported in one line by ``one_line_errors``: Prefect's console traceback is noise."""
    return isinstance(exc, user_error_types())


def register(root: typer.Typer) -> None:
    root.command("extract")(one_line_errors(with_config_flags(ExtractConfig, extract, into="options",
                                                               json_fields=JSON_FLAGS)))
