"""AVIGATE steps on all 1,213 audio tokens streamed from an MSR-VTT-sized store, against
steps on a smaller store held in memory.

Prints the median step time of each (batch drawn by the real ``TrainLoader``, the full
AVIGATE head: width 512, 4 + 4 layers, AST width 768), their ratio, and the peak RSS of
this process (``resource.getrusage``) next to the machine's RAM, to show the streamed
split never sat in memory.

    .venv/bin/python benchmarks/audio_stream.py --videos 9000     # full size: 16.8 GB of tokens

The stores (``--videos`` train videos, 1214 x 768 float16 tokens each, plus frames and
2 captions per video; and ``--memory-videos`` for the in-memory side) are written on the
first run by a child process, one 256-video block at a time, and reused. When the big
store's tokens would fit half the available RAM (reduced sizes), the RAM budget is cut
so that ``stream="auto"`` streams the audio as it does at full size.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from steps import plain_step  # benchmarks/steps.py (the script's folder is on sys.path)

from storage.synthetic import create_synthetic_store, fill_random, write_step


def write_store(path: str, n_videos: int) -> None:
    """Every video in train, real-sized AST tokens (10 % silent), random frames and text."""
    create_synthetic_store(path, n_videos, 2, splits=["train"] * n_videos, dataset="bench-audio")
    fill_random(path, ("frames", "text"))
    rng = np.random.default_rng(0)
    size = 1214 * 768
    # drawing 9,000 x 1214 x 768 normals takes ~20 min here: each video takes a window at
    # a random offset of one pool instead (as incompressible, and distinct per video)
    pool = rng.standard_normal(8 * size, dtype=np.float32).astype(np.float16)

    def audio(idx):
        has = rng.random(idx.size) < 0.9
        starts = rng.integers(0, pool.size - size, idx.size)
        a = np.stack([pool[s:s + size] for s in starts]).reshape(idx.size, 1214, 768)
        a *= has[:, None, None]
        return {"data": {"audio_tokens": a, "has_audio": has}}
    write_step(path, "audio", audio)


def ensure_store(path: str, n_videos: int) -> None:
    if os.path.exists(path):
        return
    t0 = time.perf_counter()
    # a child process, so that writing does not count in this process's peak RSS
    subprocess.run([sys.executable, __file__, "--write", path, "--videos", str(n_videos)], check=True)
    print(f"wrote {path} ({n_videos} videos) in {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=9000, help="train videos of the streamed store")
    p.add_argument("--memory-videos", type=int, default=400, help="train videos of the in-memory store")
    p.add_argument("--dir", default="/tmp", help="where the stores go")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per side (median)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    p.add_argument("--write", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write:
        write_store(args.write, args.videos)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import training.data as data_mod
    from training.data import StoreAudio, TrainLoader, select_split, split_nbytes
    from training.heads import create_head

    os.makedirs(args.dir, exist_ok=True)
    big = os.path.join(args.dir, f"bench_audio_{args.videos}.zarr")
    small = os.path.join(args.dir, f"bench_audio_{args.memory_videos}.zarr")
    ensure_store(big, args.videos)
    ensure_store(small, args.memory_videos)
    cpu = torch.device("cpu")
    head = create_head("avigate", dim=512, audio_dim=768, max_frames=12)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-4)
    fields = head.text_fields + head.video_fields

    def loader(store: str, stream: str) -> TrainLoader:
        data = select_split(store, "train")
        audio = StoreAudio(store)
        need = split_nbytes(store, data, fields, audio)
        if stream == "auto" and need <= data_mod.available_ram() // 2:
            rest = split_nbytes(store, data, tuple(f for f in fields if f != "audio"), None)
            data_mod.available_ram = lambda: 2 * (rest + 1)  # as if the RAM were that of a full-size run
        t0 = time.perf_counter()
        ld = TrainLoader(store, data, fields, args.batch_size, cpu, audio, stream=stream)
        print(f"{store}: {data.n_videos} videos, split {need / 2**30:.1f} GiB in memory; "
              f"audio {'streamed per batch' if ld.stream_audio else 'in memory'}, rest {ld.stream} "
              f"(set up in {time.perf_counter() - t0:.1f} s)", flush=True)
        return ld

    def step(batch) -> None:
        plain_step(head, opt, batch)

    def peak_rss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    in_memory = loader(small, "memory")
    peak_before = peak_rss()
    streamed = loader(big, "auto")
    mem_it, str_it = in_memory.epoch(0, 0), streamed.epoch(0, 0)
    times: dict[str, list[float]] = {"memory": [], "stream": []}
    for i in range(1 + args.steps):  # one warm-up step each; alternate so load elsewhere hits both
        for name, it in (("memory", mem_it), ("stream", str_it)):
            t0 = time.perf_counter()
            step(next(it))
            if i:
                times[name].append(time.perf_counter() - t0)
    mem_it.close()
    str_it.close()
    t_mem, t_str = float(np.median(times["memory"])), float(np.median(times["stream"]))
    peak = peak_rss()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, medians of {args.steps} steps: "
          f"in memory {t_mem:.2f} s, streamed {t_str:.2f} s: ratio {t_str / t_mem:.2f}")
    print(f"peak RSS {peak / 2**30:.2f} GiB of {total / 2**30:.1f} GiB RAM; {peak_before / 2**30:.2f} GiB "
          f"before the streamed loader, so streaming added {(peak - peak_before) / 2**30:.2f} GiB "
          f"(the streamed store's audio: {args.videos * 1214 * 768 * 2 / 2**30:.1f} GiB)")


if __name__ == "__main__":
    main()
