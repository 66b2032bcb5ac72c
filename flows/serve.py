"""Serve the extraction deployments: ``python -m flows.serve [--name vtr]``.

With ``PREFECT_API_URL`` pointing at a server (``prefect server start``), this registers
``extract-msrvtt/<name>`` and ``extract-dataset/<name>`` and runs each triggered flow run
in a subprocess. Both take the extraction options as one parameter, ``config``
(``flows.config.ExtractConfig``: the UI shows its fields as the run form), e.g.::

    prefect deployment run 'extract-msrvtt/vtr' --param data_root=/data/msrvtt \\
        --param store=/data/msrvtt.zarr --param config='{"clip_weights": "/weights/ViT-B-32.pt",
        "ast_weights": "/weights/audioset_10_10_0.4593.pth"}' --watch

``extract-dataset`` takes a registered dataset (``--param dataset=vatex --param
data_root=/data/vatex``; reader options in ``config``'s ``dataset_options``) or a
CSV/JSONL manifest (``--param manifest=list.csv``).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def main(argv: list[str] | None = None) -> None:
    from prefect import serve

    from flows.extract import extract_dataset, extract_msrvtt

    ap = argparse.ArgumentParser(description="serve the vtr extraction deployments")
    ap.add_argument("--name", default="vtr", help="deployment name (default: vtr)")
    ap.add_argument("--limit", type=int, default=1,
                    help="flow runs at once (1: one extraction owns the machine's GPU)")
    args = ap.parse_args(argv)
    deployments = [f.to_deployment(name=args.name, tags=["vtr"]) for f in (extract_msrvtt, extract_dataset)]
    serve(*deployments, limit=args.limit)


if __name__ == "__main__":
    main()
