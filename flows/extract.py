"""The extraction flows, thin Prefect wrappers over the core (``flows.run``).

``extract-msrvtt`` reads MSR-VTT's annotations, ``extract-dataset`` a registered dataset or
a CSV/JSONL manifest; both call ``run_extraction`` with the flow's task runner as the
executor: one Prefect task per owned store block (retries from ``flows.registry``), the
run summary as a markdown artifact.

``dask_address`` runs the block tasks on a Dask cluster: the flow runs itself again as a
subflow whose task runner is prefect-dask's ``DaskTaskRunner`` (a deployment picks its
cluster per run). Credentials never travel as parameters (the server stores those in plain
text): fsspec reads them from the environment (``AWS_ACCESS_KEY_ID``, ...), or
``credentials`` names a Prefect block (``secret/NAME`` holding a JSON object of fsspec
options, or ``aws-credentials/NAME``) loaded when the run starts.
"""
from __future__ import annotations

import contextlib
import functools
import json
from concurrent.futures import Executor
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from flows.cluster import (CONNECT_TIMEOUT_S, allow_worker_children, connect, cuda_cluster_class,
                           local_cluster_kwargs, local_workers)
from flows.config import ExtractConfig
from flows.errors import ExtractError
from flows.registry import REGISTRY
from flows.remote import read_annotations
from flows.run import read_source, run_block, run_extraction

# Locally, blocks run one at a time: a block already keeps the cores (decode workers) and
# the model busy; parallel blocks are what a Dask cluster (dask_address) is for.
LOCAL_RUNNER = ThreadPoolTaskRunner(max_workers=1)
# fsspec option names that hold a secret (s3fs, gcsfs, adlfs, HTTP auth)
SECRET_OPTIONS = frozenset({"key", "secret", "token", "password", "session_token", "aws_access_key_id",
                            "aws_secret_access_key", "aws_session_token", "account_key", "sas_token",
                            "client_secret", "connection_string", "credentials"})


@functools.cache
def _block_task(step: str):
    """The Prefect task of one block of ``step`` (named ``<step>_block``: Dask shows it so)."""
    spec = REGISTRY[step]

    def run(store: str, idx: list[int] | None, first: int, cfg: ExtractConfig) -> dict:
        log = get_run_logger()
        return run_block(step, store, idx, cfg, on_error=lambda i, e: log.warning("%s item %d: %s", step, i, e)
                         if i >= 0 else log.error("%s: %s", step, e))

    run.__name__ = run.__qualname__ = f"{step}_block"
    name = f"{step} block {{first}}" if spec.scope == "block" else step
    return task(name=step, task_run_name=name, retries=spec.retries, retry_delay_seconds=spec.retry_delay_s)(run)


class TaskExecutor(Executor):
    """The running flow's task runner as the core's executor: each ``run_block`` call is
    one task; a model step's task asks a Dask worker for its GPU with ``gpu_per_worker``."""

    retries_blocks = True  # the tasks retry (the registry's count): the core does not again

    def submit(self, fn, /, *args, **kwargs):
        step, store, idx, cfg = args
        runner = FlowRunContext.get().task_runner
        gpu = cfg.gpu_per_worker and REGISTRY[step].encoder is not None
        with _annotate(resources={"GPU": 1}) if gpu else contextlib.nullcontext():
            return runner.submit(_block_task(step), {"store": store, "idx": idx, "first": idx[0] if idx else 0,
                                                     "cfg": cfg})


def _annotate(**kw):
    import dask
    return dask.annotate(**kw)


def _refuse_secrets(cfg: ExtractConfig) -> None:
    def walk(d: dict) -> str | None:
        for k, v in d.items():
            if k in SECRET_OPTIONS:
                return k
            if isinstance(v, dict) and (found := walk(v)):
                return found
        return None

    if cfg.storage_options and (key := walk(cfg.storage_options)):
        raise ExtractError(f"config.storage_options holds a credential ({key!r}): a flow parameter is stored "
                           "in plain text; set it in the environment or name a block with credentials=")


def _with_credentials(cfg: ExtractConfig, block: str | None) -> ExtractConfig:
    """``cfg`` with the fsspec options of the Prefect block ``block`` (``type/name``) added."""
    if not block:
        return cfg
    from prefect.blocks.core import Block

    try:
        creds = Block.load(block)
    except (ValueError, KeyError) as e:
        raise ExtractError(f"credentials block {block!r}: {str(e).splitlines()[0]}") from None
    if hasattr(creds, "aws_access_key_id"):  # prefect-aws's AwsCredentials
        secret = creds.aws_secret_access_key
        opts = {"key": creds.aws_access_key_id, "secret": secret.get_secret_value() if secret else None}
        if getattr(creds, "aws_session_token", None):
            opts["token"] = creds.aws_session_token
    else:
        opts = creds.get() if hasattr(creds, "get") else None
        if isinstance(opts, str):
            with contextlib.suppress(json.JSONDecodeError):
                opts = json.loads(opts)
        if not isinstance(opts, dict):
            raise ExtractError(f"credentials block {block!r}: wants a JSON object of fsspec options")
    return cfg.model_copy(update={"storage_options": {**(cfg.storage_options or {}), **opts}})


def dask_task_runner(address: str, gpu_per_worker: bool = False):
    """prefect-dask's runner for ``address`` (``flows.cluster``): ``local:N`` starts a
    cluster of N worker processes (dask_cuda's ``LocalCUDACluster`` on a GPU machine); a
    scheduler's address is refused in one line unless it answers."""
    from prefect_dask import DaskTaskRunner

    allow_worker_children()
    if address.startswith("local"):
        n = local_workers(address)
        if cuda_cluster_class():
            return DaskTaskRunner(cluster_class="dask_cuda.LocalCUDACluster", cluster_kwargs={"n_workers": n})
        return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(n, gpu_per_worker))
    connect(address).close()
    return DaskTaskRunner(address=address, client_kwargs={"timeout": f"{CONNECT_TIMEOUT_S}s"})


def _run(manifest, store: str, config: ExtractConfig) -> dict:
    ctx = FlowRunContext.get()
    return run_extraction(manifest, store, config, TaskExecutor(), run_id=str(ctx.flow_run.id), progress=False,
                          log=get_run_logger(), report=lambda md: create_markdown_artifact(
                              markdown=md, key="extraction-summary", description="per-step counts and failed items"))


def _on_dask(fl, address: str, config: ExtractConfig, **params) -> dict:
    """``fl`` again as a subflow whose block tasks run on the Dask cluster at ``address``."""
    runner = dask_task_runner(address, config.gpu_per_worker)
    get_run_logger().info("block tasks on the Dask cluster at %s", address)
    return fl.with_options(task_runner=runner)(config=config, dask_address=None, **params)


@flow(name="extract-msrvtt", log_prints=True, task_runner=LOCAL_RUNNER)
def extract_msrvtt(data_root: str, store: str, config: ExtractConfig = ExtractConfig(),
                   train_list: Literal["9k", "7k"] = "9k",
                   dask_address: str | None = None, credentials: str | None = None) -> dict:
    """MSR-VTT folder (``MSRVTT_data.json``, train/test csv, ``videos/all``) -> feature store.
    ``dask_address``: the block tasks on a Dask cluster; ``credentials``: a block's name."""
    from extractors.annotations import AnnotationError, read_msrvtt

    _refuse_secrets(config)
    if dask_address:
        return _on_dask(extract_msrvtt, dask_address, config, data_root=data_root, store=store,
                        train_list=train_list, credentials=credentials)
    config = _with_credentials(config, credentials)
    try:
        manifest = read_annotations(data_root, config.storage_options, lambda root: read_msrvtt(
            root, train_list=train_list, strict=config.strict,
            **{k: v for k, v in config.reader_options().items() if k in ("n_val", "video_dir")}))
    except AnnotationError as e:
        raise ExtractError(str(e)) from None
    return _run(manifest, store, config)


@flow(name="extract-dataset", log_prints=True, task_runner=LOCAL_RUNNER)
def extract_dataset(manifest: str | None = None, store: str = "", config: ExtractConfig = ExtractConfig(),
                    data_root: str | None = None, dataset: str | None = None,
                    dask_address: str | None = None, credentials: str | None = None) -> dict:
    """A registered dataset's folder (``dataset=`` its name, ``data_root=`` the folder;
    ``config.dataset_options`` go to its reader), or any dataset from a CSV/JSONL manifest
    (``manifest=``: ``video_id, path, caption[, split]``; ``dataset`` then names it).
    ``dask_address``: the block tasks on a Dask cluster; ``credentials``: a block's name."""
    _refuse_secrets(config)
    if not store:
        raise ExtractError("no store path given (store=...)")
    if dask_address:
        return _on_dask(extract_dataset, dask_address, config, manifest=manifest, store=store,
                        data_root=data_root, dataset=dataset, credentials=credentials)
    config = _with_credentials(config, credentials)
    return _run(read_source(config, data_root=data_root, manifest=manifest, dataset=dataset), store, config)


if __name__ != "flows.extract":
    # A deployment's entrypoint (flows/extract.py:extract_msrvtt) is loaded from its file as a
    # bare module; Dask's scheduler and workers unpickle the flow (in each task's context)
    # by its module's name, so the flows must be the package's, which they can import.
    from flows.extract import extract_dataset, extract_msrvtt  # noqa: F811
