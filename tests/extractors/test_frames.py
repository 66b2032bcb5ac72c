import os
import time

import numpy as np
import pytest
import torch

from extractors import frames as F
from extractors.errors import MediaError
from extractors.frames import (CLIP_MEAN, CLIP_STD, load_clip_frames, normalize_for_clip, read_frames,
                               resize_center_crop, sample_positions)


def test_sample_positions_pads_and_masks():
    idx, mask = sample_positions(105, 25.0)
    assert idx.tolist() == [0, 25, 50, 75, 100] + [0] * 7 and mask.sum() == 5 and not mask[5:].any()


def test_sample_positions_thins_with_linspace():
    idx, mask = sample_positions(200, 10.0)  # 20 one-per-second positions
    pos = np.arange(20) * 10
    assert mask.all() and idx.tolist() == pos[np.linspace(0, 19, 12).astype(int)].tolist()


def test_sample_positions_rounding_and_edges():
    idx, mask = sample_positions(100, 29.97, n=4)
    assert idx.tolist() == [0, 30, 60, 90] and mask.all()
    assert sample_positions(1, 25.0)[1].sum() == 1
    assert not sample_positions(0, 25.0)[1].any()
    with pytest.raises(ValueError):
        sample_positions(10, 0.0)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_read_frames_shapes(media, backend):
    x, mask = read_frames(media.cfr, backend=backend)
    assert x.shape == (12, 120, 160, 3) and x.dtype == np.uint8
    assert mask.sum() == 5 and (x[~mask] == 0).all() and x[mask].std() > 10


@pytest.mark.parametrize("name", ["cfr", "long", "portrait", "noaudio"])
def test_backends_agree_on_constant_rate_files(media, name):
    path = getattr(media, name)
    # the backends themselves: read_frames would hide a failing decord behind its PyAV fallback
    a, ma = F.BACKENDS["decord"](str(path), 12)
    b, mb = F.BACKENDS["pyav"](str(path), 12)
    assert a.dtype == b.dtype == np.uint8
    assert (ma == mb).all() and a.shape == b.shape
    # same frames: tiny colour-conversion differences at most, while neighbouring frames of
    # the moving test pattern differ far more
    diff = np.abs(a.astype(int) - b.astype(int)).mean(axis=(1, 2, 3))
    assert diff.max() < 2.0
    if name == "long":
        assert ma.all() and np.abs(a[1].astype(int) - a[2].astype(int)).mean() > 5 * max(diff.max(), 0.1)


def test_rotated_phone_video_is_upright(media):
    import subprocess
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(media.rotated), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(160, 120, 3).astype(int)  # ffmpeg autorotates
    for backend in ("decord", "pyav"):
        x, mask = read_frames(media.rotated, backend=backend)
        assert x.shape[1:] == (160, 120, 3)
        assert np.abs(x[0].astype(int) - ref).mean() < 2.0


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_short_long_vfr_and_odd_names(media, backend):
    assert read_frames(media.short, backend=backend)[1].sum() == 1
    x, m = read_frames(media.tenmin, backend=backend)
    assert m.all() and x.shape == (12, 32, 32, 3)
    x, m = read_frames(media.vfr, backend=backend)
    assert m.sum() >= 1 and x[m].std() > 0
    assert read_frames(media.odd_name, backend=backend)[1].sum() == 5
    assert read_frames(media.dash_name, backend=backend)[1].sum() == 3


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("name", ["zero", "text", "truncated", "audio_only"])
def test_bad_files_raise_media_error(media, backend, name):
    path = getattr(media, name)
    with pytest.raises(MediaError) as e:
        read_frames(path, backend=backend)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def _sleepy(path, n, max_seconds=None):
    time.sleep(30)


@pytest.fixture
def fresh_worker():
    F.shutdown_decode_workers()  # the next decode child forks with the patched BACKENDS
    yield
    F.shutdown_decode_workers()


def test_hanging_decoder_is_killed_and_replaced(media, monkeypatch, fresh_worker):
    monkeypatch.setitem(F.BACKENDS, "sleepy", _sleepy)
    assert read_frames(media.cfr, backend="pyav", timeout_s=10)[1].sum() == 5
    old = F._local.worker.proc.pid
    t = time.perf_counter()
    with pytest.raises(MediaError, match="timed out after 1 s"):
        read_frames(media.cfr, backend="sleepy", timeout_s=1.0)
    assert time.perf_counter() - t < 10
    assert read_frames(media.cfr, backend="decord", timeout_s=10)[1].sum() == 5
    assert F._local.worker.proc.pid != old
    with pytest.raises(ProcessLookupError):
        os.kill(old, 0)


def test_thread_bound_used_in_daemonic_workers(media, monkeypatch):
    monkeypatch.setitem(F.BACKENDS, "sleepy", _sleepy)
    with pytest.raises(MediaError, match="timed out"):
        F._run_bounded_thread("sleepy", str(media.cfr), 12, 0.5)
    x, m = F._run_bounded_thread("pyav", os.fspath(media.cfr), 12, 30)
    assert m.sum() == 5


def test_decoder_crash_is_reported(media, monkeypatch, fresh_worker):
    monkeypatch.setitem(F.BACKENDS, "crash", lambda p, n, max_seconds=None: os._exit(3))
    with pytest.raises(MediaError, match="crashed"):
        read_frames(media.cfr, backend="crash", timeout_s=10)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        read_frames("x.mp4", backend="opencv")


def test_resize_center_crop_matches_torchvision():
    from PIL import Image
    from torchvision import transforms as T
    rng = np.random.default_rng(0)
    tf = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224)])
    for h, w in [(240, 320), (320, 240), (101, 333), (224, 224), (90, 60)]:
        x = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        got = resize_center_crop(x, 224)
        assert got.shape == (2, 224, 224, 3)
        for i in range(2):
            assert (got[i] == np.asarray(tf(Image.fromarray(x[i])))).all()


def test_load_clip_frames_and_normalize(media):
    x, mask = load_clip_frames(media.portrait, backend="pyav")
    assert x.shape == (12, 224, 224, 3) and x.dtype == np.uint8 and mask.sum() == 3
    assert (x[~mask] == 0).all()
    t = torch.from_numpy(x)
    y = normalize_for_clip(t)
    assert y.shape == (12, 3, 224, 224) and y.dtype == torch.float32
    ref = (t.permute(0, 3, 1, 2).float() / 255 - torch.tensor(CLIP_MEAN).view(3, 1, 1)) \
        / torch.tensor(CLIP_STD).view(3, 1, 1)
    assert torch.allclose(y, ref, atol=1e-6)
    assert normalize_for_clip(t[None]).shape == (1, 12, 3, 224, 224)
    with pytest.raises(TypeError):
        normalize_for_clip(t.float())


def _frames_in_daemon(path, q):
    try:
        q.put(int(read_frames(path, backend="decord", timeout_s=30)[1].sum()))
    except Exception as e:  # noqa: BLE001
        q.put(repr(e))


def test_read_frames_inside_a_daemonic_worker(media):
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_frames_in_daemon, args=(str(media.cfr), q), daemon=True)
    p.start()
    assert q.get(timeout=60) == 5
    p.join(10)


def _in_process(path, backend):
    return read_frames(path, backend=backend, timeout_s=None)


def _bounded_process(path, backend):
    return read_frames(path, backend=backend, timeout_s=30)


def _bounded_thread(path, backend, monkeypatch):
    # what a DataLoader worker sees: a daemonic process, which may not fork decode children
    monkeypatch.setattr(F, "can_fork", lambda: False)
    return read_frames(path, backend=backend, timeout_s=30)


@pytest.mark.parametrize("runner", ["in_process", "bounded_process", "bounded_thread"])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("name", ["truncated", "text", "missing"])
def test_failure_causes_come_from_the_decoders(media, tmp_path, monkeypatch, runner, backend, name):
    """D4: the recorded cause is the decoders' own, one line, on every path (no NameError)."""
    path = tmp_path / "missing.mp4" if name == "missing" else getattr(media, name)
    call = {"in_process": _in_process, "bounded_process": _bounded_process,
            "bounded_thread": lambda p, b: _bounded_thread(p, b, monkeypatch)}[runner]
    with pytest.raises(MediaError) as e:
        call(path, backend)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and "NameError" not in msg
    if name == "missing":
        assert e.value.cause == "no such file"
    elif backend == "pyav":
        assert e.value.cause == "pyav: Invalid data found when processing input"
    else:  # decord fails, then PyAV: both causes
        assert e.value.cause.startswith("decord: ") and e.value.cause.endswith(
            "; pyav: Invalid data found when processing input")
        assert str(media.dir) not in e.value.cause


def test_decord_failure_falls_back_to_pyav(tmp_path):
    """D5: decord refuses a valid 16x2000 video; PyAV decodes it."""
    from .conftest import _video
    src = _video(tmp_path / "strip.mp4", size="16x2000", rate=10, dur=2.0, audio=False)
    with pytest.raises(Exception, match="size must exactly match"):
        F.BACKENDS["decord"](str(src), 12)
    for timeout_s in (None, 30):
        x, mask = read_frames(src, backend="decord", timeout_s=timeout_s)
        assert x.shape == (12, 2000, 16, 3) and mask.sum() == 2 and x[mask].std() > 10
    out, mask = load_clip_frames(src)
    assert out.shape == (12, 224, 224, 3) and mask.sum() == 2


def test_timeout_is_not_retried_with_another_decoder(media, monkeypatch, fresh_worker):
    monkeypatch.setitem(F.BACKENDS, "decord", _sleepy)
    t = time.perf_counter()
    with pytest.raises(MediaError) as e:
        read_frames(media.cfr, backend="decord", timeout_s=1.0)
    assert e.value.cause == "decord decode timed out after 1 s" and time.perf_counter() - t < 10


def test_max_seconds_keeps_the_inclusive_window():
    idx, mask = sample_positions(100 * 10, 10.0, n=64, max_seconds=31)  # 100 s at 10 fps
    assert mask.sum() == 32 and idx[mask][-1] == 310  # seconds 0..31, as CLIP4Clip's DiDeMo window
    idx, mask = sample_positions(100 * 10, 10.0, n=12, max_seconds=31)
    assert mask.all() and idx[-1] == 310
    assert sample_positions(50, 10.0, n=64, max_seconds=31)[1].sum() == 5  # a short video: all of it


# --- in this process: mutation testing traces no decode child, and the fallback hides decord --
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_each_backend_keeps_max_seconds(media, backend):
    x, m = F.BACKENDS[backend](str(media.long), 12, 5.0)  # 20 s at 10 fps: seconds 0..5
    assert m.tolist() == [True] * 6 + [False] * 6 and x.dtype == np.uint8 and (x[6:] == 0).all()
    status, (y, my) = F._decode_call((backend, str(media.long), 12, 5.0))
    assert status == "ok" and (my == m).all() and np.array_equal(x, y)


def _all_frames(path) -> list[np.ndarray]:
    import av
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("container", ["ts", "mkv"])
def test_pyav_without_a_frame_count_in_the_header(tmp_path, container):
    """MPEG-TS gives a duration but no frame count, Matroska neither: the positions come
    from the duration, else from a counted pass, and are the same frames either way."""
    from .conftest import ffmpeg
    path = tmp_path / f"clip.{container}"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-t", "2.1", "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", str(path))
    x, m = F.BACKENDS["pyav"](str(path), 12)
    frames = _all_frames(path)
    assert len(frames) == 21 and m.sum() == 3  # the last position is the last frame
    for slot, k in enumerate((0, 10, 20)):
        assert np.array_equal(x[slot], frames[k]), slot
    x, m = F.BACKENDS["pyav"](str(path), 12, 1.0)  # the window holds on the counted pass too
    assert m.sum() == 2 and np.array_equal(x[1], frames[10])


def test_pyav_one_frame_a_rotated_first_frame_and_a_header_without_frames(media, tmp_path):
    from .conftest import ffmpeg
    one = tmp_path / "one.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-frames:v", "1", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(one))
    assert F.BACKENDS["pyav"](str(one), 12)[1].sum() == 1
    # only frame 0 is decoded (a window of 0 s): the rotation is read from it
    x, m = F.BACKENDS["pyav"](str(media.rotated), 12, 0.0)
    assert m.sum() == 1 and x.shape[1:] == (160, 120, 3)
    # a file cut right after its header: a video stream, not one frame
    data = media.cfr.read_bytes()
    mdat = data.index(b"mdat") + 4
    empty = tmp_path / "header_only.mp4"
    empty.write_bytes(data[:mdat])
    with pytest.raises(RuntimeError, match="^no decodable frames$"):
        F.BACKENDS["pyav"](str(empty), 12)


def test_pyav_names_a_file_without_video(media):
    with pytest.raises(RuntimeError, match="^no video stream$"):
        F.BACKENDS["pyav"](str(media.audio_only), 12)
    status, cause = F._decode_call(("pyav", str(media.audio_only), 12, None))
    assert (status, cause) == ("err", "pyav: no video stream")


def test_rotation_is_clockwise_in_quarter_turns():
    x = np.arange(6, dtype=np.uint8).reshape(1, 2, 3, 1).repeat(3, axis=-1)  # [[0 1 2] [3 4 5]]
    turn = {r: F._rotate(x, r)[0, ..., 0].tolist() for r in (0, 90, 180, 270)}
    assert turn == {0: [[0, 1, 2], [3, 4, 5]], 90: [[3, 0], [4, 1], [5, 2]],
                    180: [[5, 4, 3], [2, 1, 0]], 270: [[2, 5], [1, 4], [0, 3]]}
    assert F._rotate(x, 90).flags["C_CONTIGUOUS"] and F._rotate(x, 0) is x


def test_display_rotation_read_clockwise():
    from types import SimpleNamespace as NS
    # PyAV gives the display matrix's angle counter-clockwise; older PyAV has no attribute
    cases = {90: 270, -90: 90, 180: 180, 89.6: 270, 0: 0, None: 0}
    assert {r: F._cw_rotation(NS(rotation=r)) for r in cases} == cases
    assert F._cw_rotation(object()) == 0


class _DecoderError(Exception):
    pass


def test_decoder_causes_on_one_line():
    path = "/data/v 1.mp4"
    assert F._describe("pyav", OSError(f"[Errno 2] No such file: '{path}'"), path) == "pyav: No such file"
    assert F._describe("pyav", RuntimeError(f"cannot open {path} now"), path) == "pyav: cannot open file now"
    assert F._describe("decord", RuntimeError("x\n  stack frame 1"), path) == "decord: x"
    assert F._describe("decord", RuntimeError(""), path) == "decord: RuntimeError"
    assert F._describe("decord", ValueError("bad shape"), path) == "decord: ValueError: bad shape"
    assert F._describe("decord", IndexError(), path) == "decord: IndexError"
    assert F._describe("decord", _DecoderError("bad shape"), path) == "decord: bad shape"
    assert F._describe("decord", RuntimeError("[08:40:14] /src/video_reader.cc:486: failed with 1094995529"),
                       path) == "decord: failed with 1094995529 (invalid data)"


def test_sample_positions_refusals_and_slow_rates():
    with pytest.raises(ValueError, match="^n must be at least 1$"):
        sample_positions(100, 25.0, n=0)
    with pytest.raises(ValueError, match="^fps must be positive, got 0.0$"):
        sample_positions(10, 0.0)
    idx, mask = sample_positions(100, 25.0, n=1)
    assert idx.tolist() == [0] and mask.tolist() == [True] and idx.dtype == np.int64
    # a frame every two seconds: one position a second, rounded half to even, repeats kept
    expect = [int(np.rint(s * 0.5)) for s in range(19)]
    idx, mask = sample_positions(10, 0.5, n=32)
    assert idx[mask].tolist() == expect
    # a stream without frames (and so without a rate) is nothing to sample, not an error
    idx, mask = sample_positions(0, 0.0)
    assert not mask.any() and idx.tolist() == [0] * 12


def test_load_clip_frames_bounds_its_decode_by_default(media, fresh_worker):
    load_clip_frames(media.cfr, timeout_s=None)
    assert getattr(F._local, "worker", None) is None  # decoded here
    out, mask = load_clip_frames(media.cfr)
    assert F._local.worker is not None and mask.sum() == 5  # in the decode child


def test_read_frames_passes_its_options_on_every_path(media, monkeypatch, fresh_worker):
    """max_seconds in process, through the decode child, and on the fallback; an empty
    file named as such before any decoder."""
    for timeout_s in (None, 30):
        assert read_frames(media.long, backend="pyav", timeout_s=timeout_s, max_seconds=5)[1].sum() == 6
    from .conftest import _video
    strip = _video(media.dir / "strip_window.mp4", size="16x2000", rate=10, dur=2.0, audio=False)
    assert read_frames(strip, backend="decord", timeout_s=None, max_seconds=0)[1].sum() == 1  # PyAV's
    with pytest.raises(MediaError) as e:
        read_frames(media.zero, timeout_s=None)
    assert e.value.cause == "empty file (0 bytes)"
    out, mask = load_clip_frames(media.long, n=4, size=32, timeout_s=None, max_seconds=1)
    assert out.shape == (4, 32, 32, 3) and mask.tolist() == [True, True, False, False]
    seen = []
    monkeypatch.setitem(F.BACKENDS, "fake", lambda p, n, s=None: seen.append(p) or
                        (np.full((n, 8, 8, 3), 7, np.uint8), np.ones(n, bool)))
    out, mask = load_clip_frames(media.cfr, n=2, size=8, backend="fake", timeout_s=None)
    assert seen and (out == 7).all() and mask.all()


def test_decode_child_is_recycled_quiet_and_skipped_in_daemonic_workers(media, monkeypatch, capfd, fresh_worker):
    monkeypatch.setattr(F, "MAX_FILES_PER_WORKER", 1)
    read_frames(media.cfr, backend="decord", timeout_s=30)
    first = F._local.worker.proc.pid
    with pytest.raises(MediaError):
        read_frames(media.text, backend="decord", timeout_s=30)  # decord and FFmpeg log to fd 2
    assert F._local.worker.proc.pid != first  # a child serves MAX_FILES_PER_WORKER files
    assert capfd.readouterr().err == ""  # the cause came back through the pipe, nothing on the console
    F.shutdown_decode_workers()
    monkeypatch.setattr(F, "can_fork", lambda: False)  # a DataLoader worker may not fork
    assert read_frames(media.cfr, backend="pyav", timeout_s=30)[1].sum() == 5
    assert getattr(F._local, "worker", None) is None


def test_resize_center_crop_edges_and_refusals():
    with pytest.raises(ValueError, match=r"^expected \[k, H, W, 3\] frames, got shape \(1, 8, 8, 4\)$"):
        resize_center_crop(np.zeros((1, 8, 8, 4), np.uint8))
    for shape in ((0, 10, 10, 3), (2, 0, 5, 3), (2, 5, 0, 3)):
        out = resize_center_crop(np.ones(shape, np.uint8), 16)
        assert out.shape == (shape[0], 16, 16, 3) and out.dtype == np.uint8 and not out.any()
    for shape in ((1, 1, 4, 3), (1, 4, 1, 3), (1, 6, 6, 3)):  # one frame, one pixel high or wide
        out = resize_center_crop(np.full(shape, 200, np.uint8), 16)
        assert out.dtype == np.uint8 and (out == 200).all(), shape
    assert resize_center_crop(np.zeros((1, 6, 6, 3), np.uint8)).shape == (1, 224, 224, 3)  # CLIP's size


def test_normalize_for_clip_refuses_floats():
    with pytest.raises(TypeError, match=r"^expected uint8 frames, got torch.float32$"):
        normalize_for_clip(torch.zeros(1, 4, 4, 3))
