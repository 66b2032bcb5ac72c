"""The whole extraction against its encoders alone, and Prefect's cost per task.

    .venv/bin/python benchmarks/extract.py                  # 200 videos, random-init models, CPU
    .venv/bin/python benchmarks/extract.py --videos 60 --ast-size tiny   # a quick look

(1) Runs the extraction core (``flows.run``, as `vtr extract` does) on a generated dataset:
    compress, frames, audio, text, tags, validate (probe and crawl run first, untimed: the
    crawl needs the internet). (2) Times the same encoders on ready tensors for exactly the work the flow
    did: one image per sampled frame (batch 64), one fbank per video with audio, one
    caption per caption. The figure is (1) / (2): what orchestration, decoding and I/O
    cost on top of the models (aim: within 1.3x). (3) Prefect's overhead per task: a flow
    of N no-op tasks against N plain calls.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import torch  # noqa: E402
from prefect import flow, task  # noqa: E402

from extractors.sample_data import make_sample_dataset  # noqa: E402
from flows.config import EncoderSpec, ExtractConfig  # noqa: E402
from flows.run import read_source, run_extraction  # noqa: E402
from flows.steps import ast_encoder, clip_encoder  # noqa: E402
from storage import open_store  # noqa: E402


def encoder_only_seconds(cfg: ExtractConfig, n_images: int, n_clips: int, captions: list[str]) -> dict:
    """The encoders alone, on ready tensors, in the flow's batch sizes."""
    spec: EncoderSpec = cfg.encoders()
    clip, ast = clip_encoder(spec), ast_encoder(spec)
    fb, ab, tb = cfg.frame_batch_size, cfg.audio_batch_size, cfg.text_batch_size
    out = {}
    with torch.inference_mode():
        x = torch.randn(fb, 3, 224, 224)
        clip.encode_images(x[:2])  # warm-up
        t = time.perf_counter()
        for s in range(0, n_images, fb):
            clip.encode_images(x[: min(fb, n_images - s)])
        out["clip images"] = time.perf_counter() - t
        f = torch.randn(ab, ast.config.max_length, ast.config.num_mel_bins)
        t = time.perf_counter()
        for s in range(0, n_clips, ab):
            ast.encode(f[: min(ab, n_clips - s)])
        out["ast clips"] = time.perf_counter() - t
        t = time.perf_counter()
        for s in range(0, len(captions), tb):
            clip.encode_texts(captions[s:s + tb])
        out["clip captions"] = time.perf_counter() - t
    return out


@task
def _noop(i: int) -> int:
    return i


@flow
def _many_tasks(n: int) -> None:
    for i in range(n):
        _noop(i)


def prefect_overhead(n: int) -> float:
    _many_tasks(2)  # the ephemeral API is up and warm
    t = time.perf_counter()
    _many_tasks(n)
    in_flow = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(n):
        _noop.fn(i)
    plain = time.perf_counter() - t
    return (in_flow - plain) / n


def main() -> None:
    ap = argparse.ArgumentParser(description="extraction flow vs encoders alone")
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--ast-size", default="base", choices=["tiny", "base"],
                    help="base is the real geometry; tiny makes a quick run, but then the fbank "
                         "front end is not hidden behind the model and the ratio reads high")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=50, help="no-op tasks for the overhead figure")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vtr-bench-extract-"))
    print(f"generating {args.videos} videos under {tmp} ...", flush=True)
    data = make_sample_dataset(tmp / "data", n_videos=args.videos, seed=0)
    per_task = prefect_overhead(args.tasks)

    store = str(tmp / "bench.zarr")
    cfg = ExtractConfig(random_init=True, ast_size=args.ast_size, workers=args.workers, device="cpu",
                        crawl_retries=0)
    # the crawl decides where audio comes from; offline it can only fail, so it runs first
    # and outside the timing
    manifest = read_source(cfg, dataset="msrvtt", data_root=str(data))
    run_extraction(manifest, store, cfg.model_copy(update={"steps": ["probe", "crawl"]}))
    steps = ["compress", "frames", "audio", "text", "tags", "validate"]
    t = time.perf_counter()
    result = run_extraction(manifest, store, cfg.model_copy(update={"steps": steps}))
    flow_s = time.perf_counter() - t
    ds = open_store(store)
    n_images = int(ds.frame_mask.values.sum())
    n_clips = int(ds.has_audio.values.sum())
    captions = [str(c) for c in ds.caption_text.values]
    enc = encoder_only_seconds(cfg, n_images, n_clips, captions)
    enc_s = sum(enc.values())
    print("\nflow steps: " + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in result["steps"].items()))
    print(f"\nwork: {n_images} frames, {n_clips} audio clips (AST {args.ast_size}), {len(captions)} captions")
    print(f"  encoders alone on ready tensors   {enc_s:8.1f} s  "
          + ", ".join(f"{k} {v:.1f} s" for k, v in enc.items()))
    print(f"  whole flow (steps {', '.join(steps)})  {flow_s:8.1f} s")
    print(f"  ratio flow / encoders-only: {flow_s / enc_s:.2f}x (aim <= 1.3x)")
    print(f"\nPrefect overhead per task: {per_task * 1000:.0f} ms "
          f"({args.tasks} no-op tasks in a flow vs plain calls)")


if __name__ == "__main__":
    main()
