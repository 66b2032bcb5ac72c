"""Extraction on 1..N Dask workers: measured throughput ratios against one worker.

    .venv/bin/python benchmarks/scale.py                       # both parts, about 5 minutes here
    .venv/bin/python benchmarks/scale.py --part simulated --workers 1,2

(a) **real**: the frames step (random-init CLIP, decoding included) of a generated sample
    dataset on a ``LocalCluster`` of 1 and of 2 worker processes (one thread each).
(b) **simulated**: workers whose "encoder" only sleeps ``--sleep`` seconds per item, at
    1, 2, 4, 8, 16 workers on loopback. The blocks go the core's way (``flows.run``): one
    call per store block submitted to the cluster's ``Client``, each writes its items'
    features into a real Zarr store (``run_step_items``). Each run has 2 blocks per
    worker, so the ideal time is the same at every size and the throughput should grow
    with the workers. Overhead per task = (workers x wall time - sleep total) / tasks:
    what scheduling and the store writes add to a task.

Cluster start-up and each worker's first task (imports, building the encoder) run before
the clock starts (the warm-up blocks do not sleep). Needs no GPU: sleeping workers use no CPU, so 16 of them fit on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# workers may have children (decode workers); a benchmark has no use for Dask's chatter
os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
os.environ.setdefault("DASK_DISTRIBUTED__LOGGING__DISTRIBUTED", "critical")  # clusters closing

import numpy as np  # noqa: E402

from flows.config import ExtractConfig  # noqa: E402

# (b)'s encoder: seconds per item; items per block (= per task). A block of 16 videos
# (decode + CLIP + AST) takes seconds on a GPU too, so tasks of ~15 s are the realistic case.
SLEEP_S = 1.0
ITEMS_PER_BLOCK = 16
BLOCKS_PER_WORKER = 2


def local_cluster(n: int):
    """A ``LocalCluster`` of ``n`` one-thread worker processes."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)


# --- (b) simulated cluster ---------------------------------------------------------------
def sleeping_block(step: str, store: str, idx: list[int], cfg: ExtractConfig) -> dict:
    """The frames block with an encoder that only sleeps: the same store write path
    (``run_step_items``: inputs read, features and item states written per block)."""
    from flows.step_io import run_step_items
    from extractors.engine import ItemResult
    from flows.run import worker_address
    from storage import read_attrs

    sleep_s = float(read_attrs(store)["simulated_sleep_s"])

    def compute(inp):
        shape = (inp.layout.n_frames, inp.layout.dim)
        for j in range(len(inp)):
            time.sleep(sleep_s)
            yield ItemResult(j, {"frame_features": np.zeros(shape, np.float16),
                                 "frame_mask": np.ones(shape[0], bool)})

    return {**run_step_items(store, "frames", compute, indices=idx), "worker": worker_address()}


def simulated_store(path: str, n_videos: int, sleep_s: float) -> str:
    """A store of ``n_videos`` whose simulated encoder takes ``sleep_s`` per video."""
    from storage import StoreLayout, create_store, open_group

    ids = [f"v{i}" for i in range(n_videos)]
    create_store(path, dataset="simulated", video_ids=ids, splits=["train"] * n_videos,
                 caption_text=[f"caption {i}" for i in range(n_videos)], caption_video=list(range(n_videos)),
                 layout=StoreLayout(n_videos=n_videos, n_captions=n_videos, video_chunk=ITEMS_PER_BLOCK))
    open_group(path, mode="r+").attrs["simulated_sleep_s"] = sleep_s
    return path


def frames_on(address: str, store: str) -> dict:
    """The core's frames step (``flows.run._run_blocks``) on the cluster at ``address``;
    its wall time."""
    import logging

    from distributed import Client

    from flows import run
    from flows.registry import REGISTRY

    with Client(address) as client:
        t = time.perf_counter()
        res = run._run_blocks(REGISTRY["frames"], store, ExtractConfig(), client, False, logging.getLogger("scale"))
        res["wall_s"] = time.perf_counter() - t
    return res


def simulated(sizes: list[int], tmp: str) -> list[dict]:
    from flows import run

    # the core's block call, its encoder replaced by sleep (calls go to the workers
    # pickled by value: the workers run this one)
    run.run_block = sleeping_block
    rows = []
    for n in sizes:
        with local_cluster(n) as cluster:
            addr = cluster.scheduler_address
            # warm-up: a block per worker that does not sleep (imports, Prefect's client)
            frames_on(addr, simulated_store(f"{tmp}/warm{n}.zarr", n * ITEMS_PER_BLOCK, 0.0))
            blocks = BLOCKS_PER_WORKER * n
            res = frames_on(addr, simulated_store(f"{tmp}/sim{n}.zarr", blocks * ITEMS_PER_BLOCK, SLEEP_S))
        assert res["done"] == blocks * ITEMS_PER_BLOCK and res["failed"] == 0, res
        items = blocks * ITEMS_PER_BLOCK
        rows.append({"workers": n, "items": items, "wall_s": res["wall_s"], "per_s": items / res["wall_s"],
                     "overhead_s": (n * res["wall_s"] - items * SLEEP_S) / blocks,
                     "used": len(res["workers"])})
        one = rows[0]["per_s"]
        r = rows[-1]
        print(f"  {n:2d} workers: {r['items']:4d} items in {r['wall_s']:6.1f} s = {r['per_s']:6.2f} items/s, "
              f"x{r['per_s'] / one:5.2f} one worker ({r['per_s'] / one / n:4.2f} of ideal); "
              f"overhead {r['overhead_s']:.2f} s per task of {ITEMS_PER_BLOCK * SLEEP_S:.1f} s; "
              f"{r['used']} workers ran tasks", flush=True)
    return rows


# --- (a) real extraction -------------------------------------------------------------------
def _warm_clip(spec) -> None:
    from flows.steps import clip_encoder
    clip_encoder(spec)


def real(sizes: list[int], n_videos: int, tmp: str) -> list[dict]:
    from distributed import Client

    from extractors.sample_data import make_sample_dataset
    from flows.run import read_source, run_extraction

    data = make_sample_dataset(f"{tmp}/data", n_videos=n_videos, seed=3)
    cfg = ExtractConfig(random_init=True, ast_size="tiny", workers=1, video_chunk=2, steps=["probe", "frames"])
    rows = []
    for n in sizes:
        with local_cluster(n) as cluster, Client(cluster) as client:
            client.run(_warm_clip, cfg.encoders())  # each worker builds its CLIP before the clock
            res = run_extraction(read_source(cfg, dataset="msrvtt", data_root=str(data)), f"{tmp}/real{n}.zarr",
                                 cfg, client, progress=False)
        frames = res["steps"]["frames"]
        rows.append({"workers": n, "videos": frames["done"] + frames["failed"], "wall_s": frames["seconds"],
                     "per_s": (frames["done"] + frames["failed"]) / frames["seconds"]})
        r = rows[-1]
        print(f"  {n} worker(s): frames of {r['videos']} videos in {r['wall_s']:.1f} s = {r['per_s']:.2f} videos/s, "
              f"x{r['per_s'] / rows[0]['per_s']:.2f} one worker; blocks per worker {frames['workers']}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["real", "simulated", "both"], default="both")
    ap.add_argument("--workers", default="1,2,4,8,16", help="simulated cluster sizes (the first is the baseline)")
    ap.add_argument("--videos", type=int, default=8, help="videos of the real part")
    args = ap.parse_args(argv)
    print(f"cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="vtr-scale-") as tmp:
        if args.part in ("real", "both"):
            print(f"(a) real extraction, frames step (random-init CLIP ViT-B/32, decode included), {args.videos} videos:")
            r = real([1, 2], args.videos, tmp)
            print(f"    2 workers / 1 worker throughput: {r[1]['per_s'] / r[0]['per_s']:.2f}")
        if args.part in ("simulated", "both"):
            print(f"(b) simulated encoder ({SLEEP_S} s per item, {ITEMS_PER_BLOCK} items per task, "
                  f"{BLOCKS_PER_WORKER} tasks per worker), real Zarr writes:")
            s = simulated([int(x) for x in args.workers.split(",")], tmp)
            print(f"    {s[-1]['workers']} workers / 1 worker throughput: {s[-1]['per_s'] / s[0]['per_s']:.2f} "
                  f"(aim >= {0.85 * s[-1]['workers'] / s[0]['workers']:.1f})")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
