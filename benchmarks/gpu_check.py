"""One prepared GPU check: extraction and head training at the hardware's pace, offline.

    bash benchmarks/gpu_check.sh --prepare       # here: the wheels to carry, and the one device command
    bash benchmarks/gpu_check.sh                 # the GPU run: about 2,000 clips, a 10,000-video store
    bash benchmarks/gpu_check.sh --size 0.25     # a quarter of both
    bash benchmarks/gpu_check.sh --cpu-smoke     # the same code on tiny sizes, on the CPU (a test runs it)

It runs as the lent GPU machine's image is, with the wheels of benchmarks/gpu_wheels.txt on
PYTHONPATH: no Prefect (the extraction steps are called directly, ``flows.steps``) and no
ffmpeg binary. Everything it reads it makes: clips written with OpenCV's VideoWriter (3 fps,
short side 224: what the compress step writes), each with a 16 kHz mono WAV beside it
synthesised in numpy (the audio a crawl records), in MSR-VTT's layout; and a synthetic store
of random features. No network, no pretrained weights: the encoders (open_clip ViT-B/32,
AST base) are built with random weights, which cost the same to run. decord decodes the
frames (PyAV, the project's fallback, if carried).

It prints each phase's seconds, then
  (a) CLIP frames/s of the whole pipeline (the frames step: decode, normalise, encode,
      write) against the encoder alone on ready tensors, and their ratio (aim >= 0.8);
  (b) AST clips/s the same way (the audio step: read the WAV, fbank, encode, write);
  (c) seconds per AVIGATE-head epoch over MSR-VTT's 180,000 training pairs (aim <= 30 s),
      measured by the trainer (`training.trainer.train`, split held on the device) over
      the store's pairs and scaled to 180,000 when the store is smaller;
  (d) the GPU memory peak: torch's in this process and the device's (nvidia-smi, sampled
      through the whole run); on the CPU "n/a (cpu)" and the peak RSS instead;
and the device's name; then benchmarks/finetune.py --quick where that file exists.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
FPS, WIDTH, HEIGHT, SAMPLE_RATE = 3, 398, 224, 16_000


def make_clip(path: Path, i: int, seconds: float) -> None:
    """A moving colour pattern (MPEG-4 Part 2, OpenCV's VideoWriter) and a tone with noise
    as a 16 kHz mono WAV beside it."""
    import cv2
    import numpy as np

    n = max(1, round(seconds * FPS))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        sys.exit(f"error: {path}: OpenCV's VideoWriter cannot write mp4v here")
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = rng.integers(0, 256, 3)
    pattern = np.stack([(x * (c + 1) + y * (2 - c) + base[c]) % 256 for c in range(3)], axis=-1).astype(np.uint8)
    for k in range(n):  # the pattern moves 9 pixels a frame: OpenCV's calls release the GIL, numpy's roll is cheap
        writer.write(np.roll(pattern, 9 * k, axis=1))
    writer.release()
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.4 * np.sin(2 * np.pi * (200 + 7 * (i % 200)) * t) + 0.05 * rng.standard_normal(t.size)
    with wave.open(str(path.with_suffix(".wav")), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(tone, -1, 1) * 32767).astype("<i2").tobytes())


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
    """CLIP images/s and AST clips/s on ready tensors, built as the extraction builds them."""
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
    """The frames and audio steps on a new store, run by the extraction core (``flows.run``:
    no Prefect, no ffmpeg binary). The clips carry no audio track, and ffprobe is absent, so
    the media decisions the probe and crawl steps record are written first from OpenCV's
    reading of each clip: its audio is the WAV beside it (a crawled source). Returns each
    step's counts and seconds."""
    import cv2
    import numpy as np

    from extractors.annotations import read_msrvtt
    from extractors.engine import ItemResult
    from flows.config import ExtractConfig
    from flows.run import InlineExecutor, load_encoders, run_steps, store_layout
    from flows.step_io import run_step_items
    from storage import create_store

    cfg = ExtractConfig(random_init=True, ast_size=s.ast_size, device=device, n_frames=s.n_frames,
                        media_dir=f"{store}.media", steps=["frames", "audio"])
    manifest = read_msrvtt(data, n_val=n_val)
    layout = store_layout(manifest, cfg)
    create_store(str(store), layout=layout, **{**manifest.store_kwargs(), "data_root": str(data.resolve())})
    videos = [str((data / p).resolve()) for p in manifest.video_paths]

    def probed(j: int, path: str) -> ItemResult:
        cap = cv2.VideoCapture(path)
        fps, n = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        cap.release()
        return ItemResult(j, {"duration": np.float32(n / fps), "fps": np.float32(fps), "width": np.int32(w),
                              "height": np.int32(h), "rotation": np.int16(0), "source_has_audio": np.bool_(False)})

    run_step_items(str(store), "probe", lambda inp: (probed(j, videos[int(i)]) for j, i in enumerate(inp.idx)))
    run_step_items(str(store), "crawl", lambda inp: (
        ItemResult(j, {"audio_source": "crawled", "audio_path": str(Path(videos[int(i)]).with_suffix(".wav"))})
        for j, i in enumerate(inp.idx)))
    t = time.perf_counter()
    load_encoders(cfg)  # built once; the steps reuse them (flows.steps caches them)
    print(f"  encoders built in {time.perf_counter() - t:.1f} s", flush=True)
    steps = run_steps(str(store), cfg, InlineExecutor(), progress=False)
    for name, res in steps.items():
        print(f"  {name} step: {res['seconds']:.1f} s ({res['done']} done, {res['failed']} failed)", flush=True)
        if res["failed"]:
            from storage import failures
            first = failures(str(store))[0]
            sys.exit(f"error: the {name} step failed on generated input: {first['item']}: {first['error']}")
    return steps


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


def finetune(device: str) -> tuple[float, int | None]:
    """benchmarks/finetune.py --quick (issue 26's), where it exists: its seconds and exit
    status (None: absent)."""
    script = REPO / "benchmarks" / "finetune.py"
    if not script.exists():
        return 0.0, None
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(script), "--quick", "--device", device], cwd=REPO)
    return time.perf_counter() - t, r.returncode


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
        os.environ["OMP_NUM_THREADS"] = "1"  # and the decode workers'
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vtr-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"device: {device_name(dev)}", flush=True)
    print(f"ffmpeg binary on the PATH: {'yes (not used)' if shutil.which('ffmpeg') else 'no'}", flush=True)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    phases: dict[str, float] = {}
    try:
        with GpuMemory() as smi:
            t = time.perf_counter()
            n_val = make_dataset(work / "data", s.clips, s.clip_seconds)
            phases["clips"] = time.perf_counter() - t
            print(f"phase clips: {phases['clips']:.1f} s ({s.clips} clips of {s.clip_seconds:.0f} s, "
                  "OpenCV mp4v + numpy WAV)", flush=True)
            t = time.perf_counter()
            steps = run_extract(work / "data", work / "extract.zarr", n_val, s, dev.type)
            phases["extract"] = time.perf_counter() - t
            print(f"phase extract: {phases['extract']:.1f} s", flush=True)
            from storage import open_store
            ds = open_store(str(work / "extract.zarr"))
            n_frames, n_clips = int(ds["frame_mask"].values.sum()), int(ds["has_audio"].values.sum())
            t = time.perf_counter()
            alone = encoders_alone(s, dev.type)
            phases["encoders alone"] = time.perf_counter() - t
            print(f"phase encoders alone: {phases['encoders alone']:.1f} s", flush=True)
            t = time.perf_counter()
            epochs, pairs = train_epoch(s, work, dev.type, args.compile)
            phases["training"] = time.perf_counter() - t
            print(f"phase training: {phases['training']:.1f} s", flush=True)
            ft_s, ft_rc = finetune(dev.type)
            if ft_rc is None:
                print("phase finetune: skipped (benchmarks/finetune.py is not in this tree)", flush=True)
            else:
                phases["finetune"] = ft_s
                print(f"phase finetune: {ft_s:.1f} s (benchmarks/finetune.py --quick --device {dev.type}, "
                      f"exit {ft_rc})", flush=True)
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
                  f"in this process (extraction, encoders alone, training); {smi.peak_mib / 1024:.2f} GiB used on "
                  "the device (nvidia-smi, whole run)")
        else:
            rss = [resource.getrusage(w).ru_maxrss / 2**20 for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            print(f"(d) GPU memory peak: n/a (cpu); peak RSS {rss[0]:.2f} GiB in this process, "
                  f"{rss[1]:.2f} GiB in its largest child (decode workers)")
        # the check runs where Prefect is not installed: nothing on its path may import it
        assert "prefect" not in sys.modules, "prefect was imported"
        print("prefect imported: no")
        total = time.perf_counter() - start
        print(f"total {total:.0f} s (" + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()) + ")"
              + (" (over the 8-minute budget: rerun with a smaller --size)" if total > 480 and not args.cpu_smoke
                 else ""))
        if ft_rc:
            sys.exit(f"error: benchmarks/finetune.py --quick exited {ft_rc}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
