"""The Dask cluster a run's blocks go to: ``local:N`` (started here, closed at the end) or
the address of a running scheduler. The direct run gets a ``distributed.Client`` (the
core's executor); the flows give the same choices to prefect-dask's ``DaskTaskRunner``.
No Prefect here."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from flows.errors import ExtractError

CONNECT_TIMEOUT_S = 10


def allow_worker_children() -> None:
    """Workers must be allowed children: decode and compress workers. Remote workers need
    the same: DASK_DISTRIBUTED__WORKER__DAEMON=False."""
    import dask

    dask.config.set({"distributed.worker.daemon": False})


def local_workers(address: str) -> int:
    """N of ``local:N``; one line for anything else starting with ``local``."""
    n = address.removeprefix("local:")
    if not n.isdigit() or int(n) < 1:
        raise ExtractError(f"dask address {address!r}: want local:N (N worker processes) or tcp://HOST:PORT")
    return int(n)


def cuda_cluster_class():
    """dask_cuda's ``LocalCUDACluster`` where torch sees a GPU (else None): each worker then
    gets a GPU of its own instead of all landing on cuda:0."""
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise ExtractError("--dask local:N on a GPU machine needs dask_cuda (pip install dask-cuda)") from None
    return LocalCUDACluster


def local_cluster_kwargs(n: int, gpu_per_worker: bool) -> dict:
    """A CPU ``LocalCluster`` of ``n`` worker processes, one thread each."""
    kw = {"n_workers": n, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    return {**kw, **({"resources": {"GPU": 1}} if gpu_per_worker else {})}


def connect(address: str, **kw):
    """A ``Client`` of the scheduler at ``address``; one line when none answers."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", **kw)
    except (OSError, TimeoutError) as e:
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExtractError(f"{address}: no Dask scheduler answers ({cause})") from None


@contextlib.contextmanager
def dask_client(address: str, gpu_per_worker: bool = False) -> Iterator:
    """A ``Client`` of ``address``; ``local:N`` starts its cluster and closes it at the end."""
    allow_worker_children()
    if not address.startswith("local"):
        with connect(address) as client:
            yield client
        return
    n = local_workers(address)
    cuda = cuda_cluster_class()
    from distributed import Client, LocalCluster

    with (cuda(n_workers=n) if cuda else LocalCluster(**local_cluster_kwargs(n, gpu_per_worker))) as cluster, \
            Client(cluster) as client:
        yield client
