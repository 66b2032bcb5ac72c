"""`vtr extract`: run the extraction here (``flows.run``: no server, no port), optionally on
a Dask cluster. With PREFECT_API_URL set, or ``--prefect``, it runs the Prefect flow
``extract-dataset`` instead, so the run shows on that server.

Its extraction flags are generated from ``flows.config.ExtractConfig``'s fields (``--frame-
batch-size`` for ``frame_batch_size``, ...), so each option and its default live there once.
"""
from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path

import typer
from pydantic import ValidationError

from extractors.datasets import list_datasets
from flows.config import ExtractConfig
from vtr.errors import fail, one_line_errors, user_error_types

# Fields given as one JSON object (fsspec's options nest: client_kwargs.endpoint_url).
JSON_FLAGS = ("storage_options",)


def _flag_type(annotation) -> tuple[type, str]:
    """The type Typer parses for a config field, and a note on its accepted values."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return str, " | ".join(map(str, args))
    if typing.get_origin(annotation) is dict:
        return list[str], "key=value, repeatable; values read as JSON when they parse"
    if typing.get_origin(annotation) is list:
        return str, "comma-separated: " + ",".join(typing.get_args(args[0]) if args else ())
    if type(None) in args:
        return [a for a in args if a is not type(None)][0], ""
    return annotation, ""


def _config_options() -> list[inspect.Parameter]:
    params = []
    for name, field in ExtractConfig.model_fields.items():
        kind, values = (str, "") if name in JSON_FLAGS else _flag_type(field.annotation)
        default = (",".join(field.default) if isinstance(field.default, list) else
                   [] if isinstance(field.default, dict) else field.default)
        doc = field.description + (f" ({values})" if values and values not in field.description else "")
        opt = typer.Option(default, "--" + name.replace("_", "-"), help=doc)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt,
                                        annotation=kind | None if default is None else kind))
    return params


def _key_values(items: list[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{flag}: wants key=value, got {item!r}", code=2)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _json_object(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"{flag}: not JSON ({e.msg} at column {e.colno})", code=2)
    if not isinstance(value, dict):
        fail(f"{flag}: wants a JSON object {{...}}, got {type(value).__name__} {text!r}", code=2)
    return value


def _config(values: dict) -> ExtractConfig:
    if isinstance(values.get("steps"), str):
        values["steps"] = [s.strip() for s in values["steps"].split(",") if s.strip()]
    values["dataset_options"] = _key_values(values.get("dataset_options") or [], "--dataset-options")
    for name in JSON_FLAGS:
        if values.get(name) is not None:
            values[name] = _json_object(values[name], "--" + name.replace("_", "-"))
    try:
        return ExtractConfig(**values)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        fail(f"--{where.replace('_', '-')}: {err['msg']} (got {err.get('input')!r})", code=2)
        raise  # not reached: fail() exits


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
    **options,
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
    config = _config(options)
    source = dict(manifest=None if manifest is None else str(manifest), dataset=dataset, data_root=data_root)
    try:
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


_sig = inspect.signature(extract)
extract.__signature__ = _sig.replace(parameters=[p for p in _sig.parameters.values()
                                                 if p.kind is not inspect.Parameter.VAR_KEYWORD] + _config_options())
extract.__annotations__ = {p.name: p.annotation for p in extract.__signature__.parameters.values()}


def register(root: typer.Typer) -> None:
    root.command("extract")(one_line_errors(extract))
