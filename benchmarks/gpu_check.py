"""One prepared GPU check: extraction and head training at the hardware's pace, offline.

    bash benchmarks/gpu_check.sh                 # the GPU run: about 2,000 clips, a 10,000-video store
    bash benchmarks/gpu_check.sh --size 0.25     # a quarter of both
    bash benchmarks/gpu_check.sh --cpu-smoke     # the same code on tiny sizes, on the CPU (a test runs it)

Everything it reads it makes: short clips generated with ffmpeg's lavfi sources (3 fps,
short side 224, a tone: what the compress step writes), written in MSR-VTT's layout, and
a synthetic store of random features. No network, no pretrained weights: the encoders
(open_clip ViT-B/32, AST base) are built with random weights, which cost the same to run.

It prints
  (a) CLIP frames/s of the whole pipeline (`vtr extract`'s frames step: decode, normalise,
      encode, write) against the encoder alone on ready tensors, and their ratio (aim >= 0.8);
  (b) AST clips/s the same way (the audio step: decode, fbank, encode, write);
  (c) seconds per AVIGATE-head epoch over MSR-VTT's 180,000 training pairs (aim <= 30 s),
      measured by the trainer (`training.trainer.train`, split held on the device) over
      the store's pairs and scaled to 180,000 when the store is smaller;
  (d) the GPU memory peak: torch's in this process (encoders alone, training) and the
      device's (nvidia-smi, sampled through the whole run, extraction included); on the
      CPU "n/a (cpu)" and the peak RSS instead;
and the device's name.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for key, value in (("HF_HUB_OFFLINE", "1"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
                   ("PREFECT_LOGGING_LEVEL", "WARNING")):
    os.environ.setdefault(key, value)

import torch  # noqa: E402

MSRVTT_PAIRS = 180_000  # MSR-VTT 9k: 9,000 training videos x 20 captions
SOURCES = ("testsrc2", "mandelbrot", "smptebars", "rgbtestsrc", "testsrc", "cellauto")


@dataclass(frozen=True)
class Sizes:
    clips: int
    clip_seconds: float
    n_frames: int | None  # None: the dataset's (12)
    ast_size: str
    clip_batches: tuple[int, ...]  # encoder alone: the best of these batch sizes counts
    ast_batches: tuple[int, ...]
    timed_batches: int
    videos: int  # training store
    captions: int
    dim: int
    audio_dim: int
    audio_tokens: int
    head: dict  # AVIGATE options (empty: the full head)
    batch_size: int
    epochs: int


def sizes(size: float, smoke: bool) -> Sizes:
    if smoke:
        return Sizes(clips=4, clip_seconds=3.0, n_frames=4, ast_size="tiny", clip_batches=(4,), ast_batches=(2,),
                     timed_batches=1, videos=40, captions=3, dim=64, audio_dim=32, audio_tokens=8,
                     head={"resampler_layers": 1, "fusion_layers": 1, "n_heads": 4}, batch_size=16, epochs=2)
    return Sizes(clips=max(4, round(2000 * size)), clip_seconds=12.0, n_frames=None, ast_size="base",
                 clip_batches=(64, 256), ast_batches=(8, 32), timed_batches=20, videos=max(40, round(10_000 * size)),
                 captions=20, dim=512, audio_dim=768, audio_tokens=32, head={}, batch_size=128, epochs=2)


# --- input ------------------------------------------------------------------------------
def make_clip(path: Path, i: int, seconds: float) -> None:
    src = SOURCES[i % len(SOURCES)]
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", f"{src}=size=398x224:rate=3",
                    "-f", "lavfi", "-i", f"sine=frequency={200 + 7 * (i % 200)}:sample_rate=16000",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "6",
                    "-c:a", "aac", "-ac", "1", str(path)], check=True)


def make_dataset(root: Path, n: int, seconds: float) -> int:
    """``n`` clips in MSR-VTT's layout (one caption each, a tenth of them test videos);
    returns ``n_val`` for the reader (a tenth of the training videos)."""
    vdir = root / "videos" / "all"
    vdir.mkdir(parents=True)
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(lambda i: make_clip(vdir / f"video{i}.mp4", i, seconds), range(n)))
    ids = [f"video{i}" for i in range(n)]
    n_test = max(1, n // 10)
    train, test = ids[:-n_test], ids[-n_test:]
    (root / "MSRVTT_data.json").write_text(json.dumps({
        "videos": [{"video_id": v, "url": "", "start time": 0.0, "end time": seconds, "id": i,
                    "split": "test" if v in test else "train"} for i, v in enumerate(ids)],
        "sentences": [{"caption": f"generated clip number {i}", "video_id": v, "sen_id": i}
                      for i, v in enumerate(ids)]}))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"{v}\n" for v in train))
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n" + "".join(f"ret{k},msr{v[5:]},{v},generated clip number {v[5:]}\n"
                                                    for k, v in enumerate(test)))
    return max(1, len(train) // 10)


# --- measurements -----------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step, rows: int, batches: int, device: torch.device) -> float:
    """Rows per second of ``step`` (after one warm-up call), ``batches`` calls timed."""
    step()
    synchronize(device)
    t = time.perf_counter()
    for _ in range(batches):
        step()
    synchronize(device)
    return rows * batches / (time.perf_counter() - t)


def encoders_alone(s: Sizes, device: str) -> dict:
    """CLIP images/s and AST clips/s on ready tensors, built as the flow builds them."""
    from flows.config import ExtractConfig
    from flows.steps import ast_encoder, clip_encoder

    spec = ExtractConfig(random_init=True, ast_size=s.ast_size, device=device).encoders()
    clip, ast = clip_encoder(spec), ast_encoder(spec)
    out = {"clip": (0.0, 0), "ast": (0.0, 0)}
    with torch.inference_mode():
        for b in s.clip_batches:
            x = torch.randn(b, 3, clip.image_size, clip.image_size, device=clip.device)
            r = rate(lambda: clip.encode_images(x), b, s.timed_batches, clip.device)
            out["clip"] = max(out["clip"], (r, b))
        c = ast.config
        for b in s.ast_batches:
            x = torch.randn(b, c.max_length, c.num_mel_bins, device=ast.device)
            r = rate(lambda: ast.encode(x), b, s.timed_batches, ast.device)
            out["ast"] = max(out["ast"], (r, b))
    out["device"] = clip.device
    return out


def run_extract(data: Path, store: Path, n_val: int, s: Sizes, device: str) -> dict:
    """`vtr extract` (probe, frames, audio: the probe says which clips carry audio) in a
    child process, as a user runs it; its JSON summary has each step's seconds."""
    cmd = [sys.executable, "-m", "vtr.cli", "extract", "--dataset", "msrvtt", "--data-root", str(data),
           "--store", str(store), "--random-init", "--device", device, "--steps", "probe,frames,audio",
           "--ast-size", s.ast_size, "--dataset-options", f"n_val={n_val}"]
    if s.n_frames:
        cmd += ["--n-frames", str(s.n_frames)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    m = re.search(r'^\{\n  "store"', r.stdout, re.M)
    if r.returncode != 0 or m is None:
        sys.exit(f"vtr extract failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    result = json.loads(r.stdout[m.start():])
    if result["failures"]:
        sys.exit(f"vtr extract: {result['failures']} item(s) failed on generated input: {r.stderr[-3000:]}")
    return result


def train_epoch(s: Sizes, work: Path, device: str, compile_step: bool) -> tuple[list[float], int]:
    """Seconds of each AVIGATE epoch on a synthetic store (``s.videos`` videos, 90 %
    train), and the pairs per epoch."""
    from storage.synthetic import create_synthetic_store, fill_random
    from training.runs import TrainConfig
    from training.trainer import train

    store = str(work / "train.zarr")
    n_held = max(2, s.videos // 20)
    splits = ["val"] * n_held + ["test"] * n_held + ["train"] * (s.videos - 2 * n_held)
    t = time.perf_counter()
    create_synthetic_store(store, s.videos, s.captions, splits=splits, dataset="gpu-check", dim=s.dim,
                           audio_dim=s.audio_dim, n_audio_tokens=s.audio_tokens, n_words=4,
                           n_frames=s.n_frames or 12)
    fill_random(store, ("frames", "audio", "text"))
    print(f"  training store: {s.videos} videos x {s.captions} captions in {time.perf_counter() - t:.0f} s",
          flush=True)
    cfg = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, device=device, resident="on",
                      compile=compile_step)
    train(store, "avigate", str(work / "run"), s.head, cfg, progress=False, log=lambda m: print("  " + m),
          score_test=False)
    with open(work / "run" / "metrics.csv") as f:
        header, *rows = [line.rstrip("\n").split(",") for line in f]
    col = header.index("epoch_s")
    return [float(r[col]) for r in rows], len(splits[2 * n_held:]) * s.captions


class GpuMemory:
    """The device's memory in use, sampled by nvidia-smi every half second (all processes)."""

    def __init__(self):
        self.peak_mib, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            r = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                               capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip():
                self.peak_mib = max(self.peak_mib, int(float(r.stdout.split()[0])))

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return f"cpu ({os.cpu_count()} cores visible, no GPU used), torch {torch.__version__}"
    name = torch.cuda.get_device_name(device)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True) if shutil.which("nvidia-smi") else None
    extra = f"; nvidia-smi: {smi.stdout.strip().splitlines()[0]}" if smi and smi.returncode == 0 else ""
    return f"{name}{extra}; {os.cpu_count()} cores visible, torch {torch.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: the same code, checked in tests")
    ap.add_argument("--size", type=float, default=1.0, help="scale of the input (1: 2,000 clips, 10,000 videos)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--compile", action="store_true", help="train with torch.compile (TrainConfig.compile)")
    ap.add_argument("--workdir", help="where the generated input goes (default: a temporary folder, removed)")
    args = ap.parse_args()
    from training.runs import RunError, resolve_device

    try:
        dev = resolve_device("cpu" if args.cpu_smoke else args.device)
    except RunError as e:
        sys.exit(f"error: {e}")
    s = sizes(args.size, args.cpu_smoke)
    if args.cpu_smoke:
        # the smoke checks the code, not the speed; on a shared machine two torch threads
        # stall each other (a tiny training epoch: 10 s instead of 0.1 s)
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # and vtr extract's
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vtr-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect-home"))
    start = time.perf_counter()
    print(f"device: {device_name(dev)}", flush=True)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        with GpuMemory() as smi:
            t = time.perf_counter()
            n_val = make_dataset(work / "data", s.clips, s.clip_seconds)
            print(f"  generated {s.clips} clips of {s.clip_seconds:.0f} s in {time.perf_counter() - t:.0f} s",
                  flush=True)
            t = time.perf_counter()
            result = run_extract(work / "data", work / "extract.zarr", n_val, s, dev.type)
            steps = result["steps"]
            print(f"  vtr extract: {time.perf_counter() - t:.0f} s in all; "
                  + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in steps.items()), flush=True)
            from storage import open_store
            ds = open_store(str(work / "extract.zarr"))
            n_frames, n_clips = int(ds["frame_mask"].values.sum()), int(ds["has_audio"].values.sum())
            t = time.perf_counter()
            alone = encoders_alone(s, dev.type)
            print(f"  encoders alone: {time.perf_counter() - t:.0f} s", flush=True)
            t = time.perf_counter()
            epochs, pairs = train_epoch(s, work, dev.type, args.compile)
            print(f"  training: {time.perf_counter() - t:.0f} s", flush=True)
        frames_s, clips_s = n_frames / steps["frames"]["seconds"], n_clips / steps["audio"]["seconds"]
        (clip_r, clip_b), (ast_r, ast_b) = alone["clip"], alone["ast"]
        print(f"(a) CLIP ViT-B/32 frames/s: pipeline {frames_s:.1f} (frames step, {n_frames} frames of "
              f"{s.clips} clips) / encoder alone {clip_r:.1f} (ready tensors, batch {clip_b}) = "
              f"{frames_s / clip_r:.2f} (aim >= 0.8)")
        print(f"(b) AST ({s.ast_size}) clips/s: pipeline {clips_s:.2f} (audio step, {n_clips} clips) / encoder "
              f"alone {ast_r:.2f} (ready fbanks, batch {ast_b}) = {clips_s / ast_r:.2f} (aim >= 0.8)")
        scaled = epochs[-1] * MSRVTT_PAIRS / pairs
        print(f"(c) AVIGATE epoch over {MSRVTT_PAIRS:,} pairs: {scaled:.1f} s (aim <= 30 s); measured "
              f"{', '.join(f'{e:.1f}' for e in epochs)} s per epoch over {pairs:,} pairs, batch {s.batch_size}"
              f"{', full head' if not s.head else ', small head'}{', compiled' if args.compile else ''}")
        if dev.type == "cuda":
            print(f"(d) GPU memory peak: {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB allocated by torch "
                  f"in this process (encoders alone, training); {smi.peak_mib / 1024:.2f} GiB used on the device "
                  "(nvidia-smi, whole run, extraction included)")
        else:
            rss = [resource.getrusage(w).ru_maxrss / 2**20 for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            print(f"(d) GPU memory peak: n/a (cpu); peak RSS {rss[0]:.2f} GiB in this process, "
                  f"{rss[1]:.2f} GiB in its largest child (vtr extract)")
        total = time.perf_counter() - start
        print(f"total {total:.0f} s" + (" (over the 8-minute budget: rerun with a smaller --size)"
                                        if total > 480 and not args.cpu_smoke else ""))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
