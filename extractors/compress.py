"""Re-encode videos the way CLIP4Clip's ``compress_video.py`` intends (3 fps, short side
224, H.264 yuv420p) but keep the aspect ratio of portrait videos too (CLIP4Clip's scale
expression squashes them) and keep or drop audio by option.

Outputs are written under a temporary name and renamed only when ffmpeg succeeded and the
result probes as video, so a crash or a failed encode never leaves a file at ``dst``.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from extractors.errors import MediaError, one_line
from extractors.probe import ffmpeg_path, probe, run_tool
from extractors.workers import available_cores, ordered_map, worker_count

# CLIP sees a centred square; a longer side beyond this ratio of the shorter is cropped away,
# so a 16x2000 strip does not become a 224x28000 frame the encoder refuses
MAX_ASPECT = 4.0


@dataclass
class CompressResult:
    src: str
    dst: str
    status: str          # "compressed" | "skipped" (valid output existed) | "failed"
    error: str = ""
    seconds: float = 0.0
    # a done item's warning: the copy holds far less than the source's container says
    warning: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def scale_filter(short_side: int, max_aspect: float = MAX_ASPECT) -> str:
    # ffmpeg's autorotation runs before this filter, so iw/ih are the display size here;
    # the centre crop caps the aspect ratio; -2 keeps it and rounds to an even size
    # (yuv420p needs it)
    s, a = int(short_side), float(max_aspect)
    crop = f"crop=w='min(iw,ih*{a:g})':h='min(ih,iw*{a:g})'"
    return f"{crop},scale=w='if(gt(iw,ih),-2,{s})':h='if(gt(iw,ih),{s},-2)':flags=bicubic,setsar=1"


def _valid_output(path: str) -> bool:
    try:
        info = probe(path)
    except MediaError:
        return False
    return info.has_video and info.duration > 0 and info.n_frames > 0


def compress_video(src: str | os.PathLike, dst: str | os.PathLike, *, fps: float = 3,
                   short_side: int = 224, keep_audio: bool = False, crf: int = 23,
                   preset: str = "veryfast", threads: int = 0,
                   timeout_s: float = 1800.0) -> CompressResult:
    """Returns "compressed" or "skipped" (a valid ``dst`` exists); raises ``MediaError``
    when the source is unusable, ffmpeg fails or runs past ``timeout_s`` (no file is left
    at ``dst`` then). ``threads`` = 0 lets ffmpeg choose; pools pass 1 per worker."""
    import ffmpeg

    src, dst = os.fspath(src), os.fspath(dst)
    t0 = time.perf_counter()
    if os.path.abspath(src) == os.path.abspath(dst):
        raise MediaError(src, "output path equals input path")
    if os.path.exists(dst) and _valid_output(dst):
        return CompressResult(src, dst, "skipped")
    info = probe(src)
    if not info.has_video:
        raise MediaError(src, "no video stream")
    os.makedirs(os.path.dirname(os.path.abspath(dst)) or ".", exist_ok=True)
    d, base = os.path.split(os.path.abspath(dst))
    tmp = os.path.join(d, f".{base}.{os.getpid()}.partial")
    out_kw = dict(format="mp4", vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset=preset,
                  movflags="+faststart", threads=threads)
    if keep_audio and info.has_audio:
        out_kw.update(acodec="aac", audio_bitrate="128k")
    else:
        out_kw["an"] = None
    arg = ffmpeg_path(src)
    cmd = (ffmpeg.input(arg)
           .output(tmp, vf=f"fps={fps:g},{scale_filter(short_side)}", **out_kw)
           .global_args("-nostdin", "-v", "error", "-y")
           .compile())
    try:
        run_tool(cmd, src, arg, timeout_s)
        if not _valid_output(tmp):
            raise MediaError(src, "encoded output does not probe as video")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return CompressResult(src, dst, "compressed", seconds=time.perf_counter() - t0,
                          warning=truncation_warning(src, info.duration, probe(dst).duration))


# How much shorter than its container's duration a video's decodable part may be before
# the item is flagged (a half-downloaded file whose index promises the whole video).
TRUNCATED_TOLERANCE = 0.1  # of the container's duration
TRUNCATED_SLACK_S = 1.0


def truncation_warning(src: str, container_s: float, decoded_s: float) -> str:
    """The one-line warning when ``decoded_s`` falls short of ``container_s`` by more
    than the tolerance, else ''."""
    if container_s > 0 and decoded_s < container_s * (1 - TRUNCATED_TOLERANCE) - TRUNCATED_SLACK_S:
        return (f"{src}: only {decoded_s:.1f} s of the {container_s:.1f} s its container states decode "
                f"(a truncated or half-downloaded file?)")
    return ""


def _job(args: tuple[str, str, dict]) -> CompressResult:
    src, dst, kw = args
    t0 = time.perf_counter()
    try:
        return compress_video(src, dst, **kw)
    except MediaError as e:
        return CompressResult(src, dst, "failed", str(e), time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - one bad item must not stop the batch
        return CompressResult(src, dst, "failed", one_line(f"{src}: {type(e).__name__}: {e}"),
                              time.perf_counter() - t0)


class _Jobs:
    def __init__(self, jobs: list[tuple[str, str, dict]]):
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> CompressResult:
        return _job(self.jobs[i])


def compress_many(pairs, workers: int | None = None, progress: bool = True,
                  **kw) -> list[CompressResult]:
    """Compress ``(src, dst)`` pairs in worker processes (``extractors.workers``); results
    in input order, failures as ``status="failed"`` with the one-line cause. ffmpeg threads
    are split between workers so they do not oversubscribe the cores."""
    from tqdm import tqdm

    pairs = [(os.fspath(s), os.fspath(d)) for s, d in pairs]
    cores = available_cores()
    workers = max(1, min(workers or worker_count(cores, 0), len(pairs) or 1))
    kw.setdefault("threads", max(1, cores // workers))
    jobs = [(s, d, kw) for s, d in pairs]

    def failed(i: int, why: str) -> CompressResult:
        return CompressResult(jobs[i][0], jobs[i][1], "failed", f"{jobs[i][0]}: {why}")

    results: list[CompressResult] = []
    with tqdm(total=len(jobs), desc="compress", unit="video", disable=not progress) as bar:
        # one job is one ffmpeg subprocess: a single one runs from here
        for r in ordered_map(_Jobs(jobs), 0 if workers == 1 else workers, failed, prefetch=1,
                             what="compress worker"):
            results.append(r)
            bar.update()
    return results
