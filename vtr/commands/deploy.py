"""`vtr deploy`: register the extraction deployments of a prefect.yaml with a work pool.

``prefect deploy --all`` does the same with the pools the file names; this command first
checks, in one line each, that ``PREFECT_API_URL`` names a server that answers and that the
work pool exists on it (before Prefect loads the flows), and ``--pool`` sends every
deployment to another pool (Prefect ignores ``--pool`` when it deploys several).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import typer
import yaml

from flows.errors import ExtractError
from vtr.errors import one_line_errors


def _pools(spec: dict) -> dict[str, str]:
    """Each work pool the file's deployments name -> the type ``prefect work-pool create``
    wants: a pool whose jobs set an image runs containers."""
    pools = {}
    for dep in spec.get("deployments") or []:
        pool = dep.get("work_pool") or {}
        if pool.get("name"):
            pools[pool["name"]] = "docker" if "image" in (pool.get("job_variables") or {}) else "process"
    return pools


def _check_work_pools(pools: dict[str, str]) -> None:
    """Refuse, in one line, unless PREFECT_API_URL names a server that answers and holds
    every pool in ``pools``."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        # without a server, Prefect would deploy into a temporary one that no worker polls
        raise ExtractError("PREFECT_API_URL is not set: point it at the server the workers poll, "
                           "e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api")
    try:
        with get_client(sync_client=True) as client:
            for name, kind in pools.items():
                try:
                    client.read_work_pool(name)
                except ObjectNotFound:
                    raise ExtractError(f"work pool {name!r} does not exist on {url}: create it with "
                                       f"prefect work-pool create {name} --type {kind}") from None
    except httpx.TransportError as e:
        raise ExtractError(f"cannot reach the Prefect API at {url} ({type(e).__name__}): "
                           "start it with prefect server start, or fix PREFECT_API_URL") from None


def deploy(prefect_file: Path = typer.Option(Path("prefect.yaml"), "--prefect-file",
                                             help="the deployments (docker/prefect.yaml: the docker pool)"),
           pool: str | None = typer.Option(None, "--pool",
                                           help="the work pool for every deployment (default: the file's)")) -> None:
    """Check the server and the work pool, then `prefect deploy --all` the file's deployments.
    Run it from the project folder: entry points are relative to it."""
    try:
        spec = yaml.safe_load(prefect_file.read_text())
    except OSError as e:
        raise ExtractError(f"{prefect_file}: {e.strerror} (run vtr deploy from the project folder, "
                           "or pass --prefect-file)") from None
    if pool:
        for dep in spec.get("deployments") or []:
            dep["work_pool"] = {**(dep.get("work_pool") or {}), "name": pool}
    _check_work_pools(_pools(spec))
    with tempfile.TemporaryDirectory(prefix="vtr-deploy-") as tmp:
        # a copy, so --pool never edits the user's file; Prefect reads it, the steps and
        # entry points still resolve against the current folder
        copy = Path(tmp) / "prefect.yaml"
        copy.write_text(yaml.safe_dump(spec, sort_keys=False))
        rc = subprocess.call([sys.executable, "-m", "prefect", "deploy", "--all", "--no-prompt",
                              "--prefect-file", str(copy)], stdin=subprocess.DEVNULL)
    raise typer.Exit(rc)


def register(root: typer.Typer) -> None:
    root.command("deploy")(one_line_errors(deploy))
