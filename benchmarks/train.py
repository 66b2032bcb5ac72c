"""Training speed on cached features, against an end-to-end CLIP step, on this CPU.

Prints, per head: seconds per training step (batch 128) with the real loader and on a
batch already in memory (their ratio must stay under 1.1: loading is not the
bottleneck), the extrapolated seconds per epoch (180k captions), and the ratio of one
end-to-end step (open_clip ViT-B/32 forward + backward on 12 frames per video and on the
captions, then the head) to one cached step on the same batch (target >= 50x).

    .venv/bin/python benchmarks/train.py --store /tmp/bench_train.zarr --threads 1

The store (10,000 videos: 9,000 train / 500 val / 500 test, 20 captions each, 12 frames,
audio stored as 32 pooled tokens, i.e. as the head consumes them) is written on the
first run and reused. CLIP weights are random (nothing can be downloaded): the cost of a
step does not depend on them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from steps import plain_step  # benchmarks/steps.py (the script's folder is on sys.path)


def median_step_time(fn, steps: int, warmup: int = 2) -> float:
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(a, b, steps: int, warmup: int = 2) -> tuple[float, float]:
    ta, tb = [], []
    for i in range(warmup + steps):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="/tmp/bench_train.zarr")
    p.add_argument("--videos", type=int, default=10_000)
    p.add_argument("--captions-per-video", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median)")
    p.add_argument("--e2e-batch", type=int, default=4, help="videos per end-to-end comparison step")
    p.add_argument("--heads", default="meanpool,avigate")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: torch's default); 1 keeps timings stable on a shared machine")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from training.data import TrainLoader, select_split
    from training.heads import create_head
    from training.planted import write_planted_store

    if not os.path.exists(args.store):
        n_val = n_test = args.videos // 20
        t0 = time.perf_counter()
        write_planted_store(args.store, args.videos, args.captions_per_video,
                            splits=(args.videos - n_val - n_test, n_val, n_test), dim=512, audio_dim=768,
                            n_audio_tokens=32, n_words=32, code_dim=64, dataset="bench-msrvtt-sized")
        print(f"wrote {args.store} in {time.perf_counter() - t0:.0f} s")
    data = select_split(args.store, "train")
    print(f"store: {args.store}: {data.n_videos} train videos, {data.n_captions} train captions")
    steps_per_epoch = data.n_captions // args.batch_size
    cpu = torch.device("cpu")
    print(f"torch threads: {torch.get_num_threads()}; batch {args.batch_size}; "
          f"{steps_per_epoch} steps per epoch; medians of {args.steps} steps")

    from storage import open_store
    ds = open_store(args.store)
    audio = np.asarray(ds["audio_tokens"].values)  # already 32 tokens: the pooled layout
    cached_step = {}
    for name in args.heads.split(","):
        head = create_head(name, dim=512, audio_dim=768, max_frames=12)
        opt = torch.optim.AdamW(head.parameters(), lr=1e-4)
        fields = head.text_fields + head.video_fields
        t0 = time.perf_counter()
        loader = TrainLoader(args.store, data, fields, args.batch_size, cpu, audio, stream="memory")
        load_s = time.perf_counter() - t0

        def step(batch) -> None:
            plain_step(head, opt, batch)

        fixed = next(loader.epoch(0, 1))
        it = loader.epoch(0, 0)
        # alternate the two kinds of step so that load from other processes hits both alike
        with_loader, in_memory = interleaved_medians(lambda: step(next(it)), lambda: step(fixed), args.steps)
        it.close()
        cached_step[name] = in_memory
        print(f"[{name}] load split into memory {load_s:.1f} s; step {with_loader:.3f} s with loader, "
              f"{in_memory:.3f} s on an in-memory batch (ratio {with_loader / in_memory:.2f}, target <= 1.1); "
              f"epoch ~ {with_loader * steps_per_epoch / 60:.1f} min")

    # end to end: CLIP towers forward and backward on frames and captions, then the head
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip
    clip, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    b = args.e2e_batch
    images = torch.randn(b * 12, 3, 224, 224)
    tokens = open_clip.get_tokenizer("ViT-B-32")([f"a caption number {i}" for i in range(b)])
    mask = torch.ones(b, 12, dtype=torch.bool)
    for name in args.heads.split(","):
        head = create_head(name, dim=512, audio_dim=768, max_frames=12)
        params = list(head.parameters()) + list(clip.parameters())
        opt = torch.optim.AdamW(params, lr=1e-6)
        small = {"audio": torch.randn(b, 32, 768), "has_audio": torch.ones(b, dtype=torch.bool),
                 "frame_mask": mask}

        def e2e():
            batch = dict(small, frames=clip.encode_image(images).reshape(b, 12, 512),
                         text=clip.encode_text(tokens))
            t, v = head.encode_text(batch), head.encode_video(batch)
            loss = head.loss(head.similarity(t, v), batch, t, v)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        hopt = torch.optim.AdamW(head.parameters(), lr=1e-4)
        feats = dict(small, frames=torch.randn(b, 12, 512), text=torch.randn(b, 512))

        def cached():
            t, v = head.encode_text(feats), head.encode_video(feats)
            loss = head.loss(head.similarity(t, v), feats, t, v)
            hopt.zero_grad(set_to_none=True)
            loss.backward()
            hopt.step()

        e2e_s = median_step_time(e2e, max(1, args.steps // 2), warmup=1)
        cached_s = median_step_time(cached, args.steps * 4)
        print(f"[{name}] batch of {b} videos ({b * 12} frames): end-to-end step {e2e_s:.2f} s, "
              f"cached step {cached_s * 1000:.1f} ms: cached is {e2e_s / cached_s:.0f}x cheaper (target >= 50x)")
        # at the training batch size the end-to-end cost grows linearly with the frames
        per_video = e2e_s / b
        print(f"[{name}] batch {args.batch_size}: end-to-end ~ {per_video * args.batch_size:.0f} s "
              f"(linear in frames) vs cached {cached_step[name]:.2f} s: "
              f"{per_video * args.batch_size / cached_step[name]:.0f}x")


if __name__ == "__main__":
    main()
