"""Decode and compression speed of the media side, as ratios against baselines measured
in the same run.

1. Compression throughput: ``compress_many`` over a process pool vs one process (ffmpeg
   threads split so both use all cores).
2. Time to the 12 sampled frames per compressed video, decord and PyAV, against a
   CLIP4Clip-style reader that decodes every frame with OpenCV and then samples.
3. The extraction pipeline on the compressed videos: decode throughput of the decode pool
   with 2 workers against 1, and frames/s of the whole pipeline (decode workers -> CLIP)
   against CLIP alone on ready tensors, with the model held to one torch thread so that on a
   2-core machine the decoding has a core of its own and the overlap shows (aim: near 1).

    .venv/bin/python benchmarks/decode.py                 # makes sample videos first
    .venv/bin/python benchmarks/decode.py --folder DIR    # your own (compressed) videos
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from extractors.compress import compress_many
from extractors.frames import read_frames, sample_positions


def opencv_all_frames_then_sample(path: str, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: read every frame (BGR -> RGB), then pick the sampled ones."""
    import cv2

    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    idx, mask = sample_positions(len(frames), fps, n)
    out = np.zeros((n,) + frames[0].shape, np.uint8)
    out[mask] = np.stack([frames[i] for i in idx[mask]])
    return out, mask


def _measure(methods: dict, paths: list[str], repeats: int) -> dict[str, float]:
    """Seconds per video for each method: methods interleaved per video (so load drift on a
    shared machine hits all alike), median over repeats, mean over videos."""
    times = {m: np.zeros((repeats, len(paths))) for m in methods}
    for r in range(repeats):
        for j, p in enumerate(paths):
            for m, fn in methods.items():
                t = time.perf_counter()
                fn(p)
                times[m][r, j] = time.perf_counter() - t
    return {m: float(np.median(t, axis=0).mean()) for m, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, help="videos to compress and decode (default: generated)")
    ap.add_argument("--n-videos", type=int, default=8, help="sample videos to generate")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="compression pool size")
    ap.add_argument("--repeats", type=int, default=5, help="decode timing: median of this many passes")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="vtr-bench-") as tmp:
        tmp = Path(tmp)
        if args.folder:
            sources = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".mp4", ".mkv", ".webm", ".avi"))
        else:
            from extractors.sample_data import make_sample_dataset
            root = make_sample_dataset(tmp / "sample", n_videos=args.n_videos, seed=0)
            sources = sorted((root / "videos" / "all").glob("*.mp4"))
        print(f"{len(sources)} source videos, {os.cpu_count()} cores")

        t = time.perf_counter()
        one = compress_many([(s, tmp / "c1" / s.name) for s in sources], workers=1, progress=False)
        t_one = time.perf_counter() - t
        t = time.perf_counter()
        pool = compress_many([(s, tmp / "cN" / s.name) for s in sources], workers=args.workers, progress=False)
        t_pool = time.perf_counter() - t
        ok = [r.dst for r in pool if r.status == "compressed"]
        assert len(ok) == sum(r.status == "compressed" for r in one), "pool and single process disagree"
        print(f"compression: one process {len(one) / t_one:.2f} videos/s, pool of {args.workers} "
              f"{len(pool) / t_pool:.2f} videos/s -> pool speed-up x{t_one / t_pool:.2f}")

        decode_table("compressed", [str(p) for p in ok], args.repeats)
        decode_table("original", [str(s) for s in sources], args.repeats)
        pipeline_figures([str(p) for p in ok], args.repeats)


def decode_table(label: str, paths: list[str], repeats: int) -> None:
    ref = {p: opencv_all_frames_then_sample(p) for p in paths}
    for p in paths:  # same frames as the baseline before timing anything
        for b in ("decord", "pyav"):
            x, m = read_frames(p, backend=b, timeout_s=None)
            assert (m == ref[p][1]).all(), (p, b)
            assert np.abs(x.astype(int) - ref[p][0].astype(int)).mean() < 3, (p, b)
    methods = {"opencv": opencv_all_frames_then_sample}
    for b in ("decord", "pyav"):
        methods[b] = lambda p, b=b: read_frames(p, backend=b, timeout_s=None)
        methods[b + "+bound"] = lambda p, b=b: read_frames(p, backend=b, timeout_s=60.0)
    t = _measure(methods, paths, repeats)
    print(f"12 sampled frames per video, {len(paths)} {label} videos (median of {repeats}):")
    print(f"  baseline OpenCV decode-all-then-sample: {1000 * t['opencv']:6.1f} ms/video")
    for b in ("decord", "pyav"):
        tb, tbb = t[b], t[b + "+bound"]
        print(f"  {b:6s} in-process {1000 * tb:6.1f} ms/video -> x{t['opencv'] / tb:.2f} vs baseline;"
              f" time-bounded (child process) {1000 * tbb:6.1f} ms/video -> x{t['opencv'] / tbb:.2f}")


def pipeline_figures(paths: list[str], repeats: int, batch_size: int = 32) -> None:
    import torch

    from extractors.clip_encoder import create_clip_encoder
    from extractors.workers import ordered_map
    from extractors.engine import FrameItems, Throughput, encode_frames
    from extractors.frames import load_clip_frames, normalize_for_clip

    items = FrameItems(paths * repeats, size=224)
    rate = {}
    for workers in (1, 2):
        t = time.perf_counter()
        assert all(r[3] is None for r in ordered_map(items, workers, items.failed))
        rate[workers] = len(items) / (time.perf_counter() - t)
    print(f"decode pool, {len(items)} compressed videos: 1 worker {rate[1]:.1f} videos/s, 2 workers "
          f"{rate[2]:.1f} videos/s -> x{rate[2] / rate[1]:.2f}")

    torch.set_num_threads(1)
    enc = create_clip_encoder(random_init=True, device="cpu")
    frames = [f[m] for f, m in (load_clip_frames(p) for p in paths)]
    ready = torch.from_numpy(np.concatenate(frames))
    t = time.perf_counter()
    for s in range(0, len(ready), batch_size):
        enc.encode_images(normalize_for_clip(ready[s:s + batch_size]))
    alone = len(ready) / (time.perf_counter() - t)
    stats = Throughput()
    for _ in encode_frames(enc, paths, batch_size=batch_size, timeout_s=60.0, workers=1, stats=stats):
        pass
    print(f"CLIP ViT-B/32 on 1 torch thread, batch {batch_size}, {len(ready)} frames of {len(paths)} videos: "
          f"alone on ready tensors {alone:.2f} frames/s, pipeline with 1 decode worker "
          f"{stats.rows_per_s():.2f} frames/s -> pipeline/encoder {stats.rows_per_s() / alone:.2f}")


if __name__ == "__main__":
    main()
