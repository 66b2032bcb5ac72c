import os

import pytest

from extractors.compress import compress_many, compress_video
from extractors.errors import MediaError
from extractors.probe import probe


@pytest.mark.parametrize("name,size", [("cfr", (298, 224)), ("portrait", (224, 298)),
                                       ("rotated", (224, 298)), ("tenmin", (224, 224))])
def test_compress_keeps_aspect_and_even_sizes(media, tmp_path, name, size):
    dst = tmp_path / f"{name}.mp4"
    r = compress_video(getattr(media, name), dst)
    assert r.status == "compressed"
    p = probe(dst)
    assert (p.width, p.height) == size and p.rotation == 0  # rotation baked in, not squashed
    assert p.fps == pytest.approx(3.0) and p.codec == "h264" and not p.has_audio
    import ffmpeg
    v = next(s for s in ffmpeg.probe(str(dst))["streams"] if s["codec_type"] == "video")
    assert v["pix_fmt"] == "yuv420p"
    assert p.duration == pytest.approx(probe(getattr(media, name)).duration, abs=0.7)


def test_compress_keep_audio_and_skip_existing(media, tmp_path):
    dst = tmp_path / "out dir" / "é.mp4"
    assert compress_video(media.cfr, dst, keep_audio=True).status == "compressed"
    assert probe(dst).has_audio
    mtime = os.stat(dst).st_mtime_ns
    assert compress_video(media.cfr, dst, keep_audio=True).status == "skipped"
    assert os.stat(dst).st_mtime_ns == mtime
    # a video without audio with keep_audio just has no audio
    assert not probe(compress_video(media.noaudio, tmp_path / "n.mp4", keep_audio=True).dst).has_audio


@pytest.mark.parametrize("name", ["zero", "text", "truncated", "audio_only"])
def test_failed_encode_leaves_no_file(media, tmp_path, name):
    dst = tmp_path / "o" / "out.mp4"
    with pytest.raises(MediaError) as e:
        compress_video(getattr(media, name), dst)
    assert "\n" not in str(e.value)
    assert not dst.exists()
    assert not dst.parent.exists() or os.listdir(dst.parent) == []  # no partial file either


def test_invalid_existing_output_is_replaced(media, tmp_path):
    dst = tmp_path / "broken.mp4"
    dst.write_text("junk")
    assert compress_video(media.short, dst).status == "compressed" and probe(dst).has_video


def test_compress_many_pool_isolates_failures(media, tmp_path):
    pairs = [(media.cfr, tmp_path / "a.mp4"), (media.text, tmp_path / "b.mp4"),
             (media.dash_name, tmp_path / "-c.mp4"), (media.short, tmp_path / "d.mp4")]
    res = compress_many(pairs, workers=2, progress=False)
    assert [r.status for r in res] == ["compressed", "failed", "compressed", "compressed"]
    assert res[1].error.startswith(f"{media.text}: ") and not (tmp_path / "b.mp4").exists()
    assert [r.status for r in compress_many(pairs[:1], workers=1, progress=False)] == ["skipped"]
    assert sorted(os.listdir(tmp_path)) == ["-c.mp4", "a.mp4", "d.mp4"]  # no partial files


def _in_daemon(pairs, q):
    q.put([r.status for r in compress_many(pairs, workers=2, progress=False)])


def test_compress_many_inside_a_daemonic_worker(media, tmp_path):
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_in_daemon, args=([(media.short, tmp_path / "a.mp4"),
                                              (media.zero, tmp_path / "b.mp4")], q), daemon=True)
    p.start()
    assert q.get(timeout=60) == ["compressed", "failed"]
    p.join(10)


def test_failed_encode_records_ffmpeg_cause(media, tmp_path):
    with pytest.raises(MediaError) as e:
        compress_video(media.truncated, tmp_path / "o.mp4")
    assert e.value.cause == "ffprobe: Invalid data found when processing input"
    with pytest.raises(MediaError, match="no such file"):
        compress_video(tmp_path / "missing.mp4", tmp_path / "o.mp4")


def test_stalled_ffmpeg_is_killed(media, tmp_path, monkeypatch):
    """ffmpeg on an input that never delivers a byte (a FIFO nobody writes) is killed at the
    bound; probe is stubbed to pass it, as a network mount that hangs after opening would."""
    import time

    from extractors import compress as C
    fifo = tmp_path / "stall.mp4"
    os.mkfifo(fifo)
    monkeypatch.setattr(C, "probe", lambda p: probe(media.cfr))
    t = time.perf_counter()
    with pytest.raises(MediaError) as e:
        compress_video(fifo, tmp_path / "o.mp4", timeout_s=1.0)
    assert str(e.value) == f"{fifo}: ffmpeg timed out after 1 s" and time.perf_counter() - t < 10
    assert os.listdir(tmp_path) == ["stall.mp4"]  # no partial output


def test_extreme_aspect_is_cropped_to_a_size_the_encoder_takes(tmp_path):
    """D5: a 16x2000 strip; the long side is cut to MAX_ASPECT times the short one."""
    from extractors.compress import MAX_ASPECT

    from .conftest import _video
    src = _video(tmp_path / "strip.mp4", size="16x2000", rate=10, dur=2.0, audio=False)
    r = compress_video(src, tmp_path / "o.mp4")
    p = probe(r.dst)
    assert r.status == "compressed" and (p.width, p.height) == (224, int(224 * MAX_ASPECT))
    wide = _video(tmp_path / "wide.mp4", size="2000x16", rate=10, dur=2.0, audio=False)
    p = probe(compress_video(wide, tmp_path / "w.mp4").dst)
    assert (p.width, p.height) == (int(224 * MAX_ASPECT), 224)


def test_a_failed_item_keeps_its_paths_cause_and_time(media, tmp_path):
    """Both failure kinds: a MediaError (its own one line) and any other exception (named
    with its type), each with the item's paths and the seconds it took."""
    from extractors.compress import _job
    missing, dst = str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4")
    r = _job((missing, dst, {}))
    assert (r.src, r.dst, r.status) == (missing, dst, "failed") and r.error.startswith(f"{missing}: no such file")
    assert 0 < r.seconds < 60
    src = str(media.short)
    r = _job((src, dst, {"fps": "three"}))  # a bad option: not a MediaError
    assert (r.src, r.dst, r.status) == (src, dst, "failed")
    assert r.error == f"{src}: ValueError: Unknown format code 'g' for object of type 'str'"
    assert 0 < r.seconds < 60 and not os.path.exists(dst)


def test_compress_many_sizes_its_pool_and_splits_ffmpeg_threads(tmp_path, monkeypatch, capsys):
    """Workers: the asked number (else the core rule), never more than the items, one at
    least, and a single one runs here (no pool); ffmpeg's threads split the cores between
    them unless given; a worker that dies fails only its item, named; the bar counts videos."""
    import json

    from extractors import compress as C
    from extractors.workers import worker_count
    seen = {}

    def fake_map(items, workers, failed, prefetch, what):
        seen.update(workers=workers, what=what, prefetch=prefetch, dead=failed(len(items) - 1, "worker died") if len(items) else None)
        return [items[i] for i in range(len(items))]

    monkeypatch.setattr(C, "ordered_map", fake_map)
    monkeypatch.setattr(C, "available_cores", lambda: 8)
    monkeypatch.setattr(C, "compress_video", lambda s, d, **kw: C.CompressResult(s, d, "compressed", json.dumps(kw)))
    pairs = [(tmp_path / f"{k}.avi", tmp_path / f"{k}.mp4") for k in range(9)]
    for n, workers, want_pool, want_threads in ((5, 3, 3, 2), (2, 3, 2, 4), (1, None, 0, 8), (5, 1, 0, 8),
                                                (5, None, min(worker_count(8, 0), 5), 8 // min(worker_count(8, 0), 5)),
                                                (9, None, 8, 1), (0, None, 0, 8)):
        res = C.compress_many(pairs[:n], workers=workers, progress=False)
        assert seen.get("workers") == want_pool or n == 0, (n, workers, seen)
        assert [json.loads(r.error)["threads"] for r in res] == [want_threads] * n, (n, workers)
        assert [r.src for r in res] == [str(s) for s, _ in pairs[:n]]
        seen.clear()
    res = C.compress_many(pairs[:2], workers=2, progress=False, threads=1)
    assert {json.loads(r.error)["threads"] for r in res} == {1}
    assert seen["what"] == "compress worker" and seen["prefetch"] == 1  # one queued job per worker: an ffmpeg each
    dead = seen["dead"]
    assert (dead.src, dead.dst, dead.status, dead.error) == (str(pairs[1][0]), str(pairs[1][1]), "failed",
                                                            f"{pairs[1][0]}: worker died")
    capsys.readouterr()
    C.compress_many(pairs[:3], workers=1, progress=True)
    err = capsys.readouterr().err
    assert "compress: 100%" in err and "3/3" in err and "video/s" in err
    C.compress_many(pairs[:3], workers=1, progress=False)
    assert capsys.readouterr().err == ""


def _options(tokens: list[str]) -> dict:
    """ffmpeg output options as a dict (a flag without a value maps to None)."""
    out, i = {}, 0
    while i < len(tokens):
        if i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            out[tokens[i]], i = tokens[i + 1], i + 2
        else:
            out[tokens[i]], i = None, i + 1
    return out


def test_the_encoder_command_and_its_defaults(media, tmp_path, monkeypatch):
    """The ffmpeg command as run (the release's 3 fps / 224 re-encode as H.264 yuv420p,
    fast start, no stdin), written to a hidden partial file beside ``dst``; audio kept as
    AAC only when asked; the skip of a valid ``dst`` names both paths."""
    from extractors import compress as C
    calls = []
    real = C.run_tool

    def recording(cmd, path, arg, timeout_s):
        calls.append((list(cmd), path, arg, timeout_s))
        return real(cmd, path, arg, timeout_s)

    monkeypatch.setattr(C, "run_tool", recording)
    dst = tmp_path / "sub" / "o.mp4"
    r = compress_video(media.cfr, dst)
    assert (r.src, r.dst, r.status, r.error, r.warning) == (str(media.cfr), str(dst), "compressed", "", "")
    assert 0 < r.seconds < 120
    cmd, path, arg, timeout_s = calls[-1]
    assert (path, arg, timeout_s) == (str(media.cfr), os.path.abspath(media.cfr), 1800.0)
    assert cmd[:3] == ["ffmpeg", "-i", os.path.abspath(media.cfr)] and cmd[-4:] == ["-nostdin", "-v", "error", "-y"]
    assert _options(cmd[3:-5]) == {"-an": None, "-crf": "23", "-f": "mp4", "-movflags": "+faststart",
                                   "-pix_fmt": "yuv420p", "-preset": "veryfast", "-threads": "0",
                                   "-vcodec": "libx264", "-vf": f"fps=3,{C.scale_filter(224)}"}
    tmp = cmd[-5]
    assert os.path.dirname(tmp) == str(dst.parent) and os.path.basename(tmp) == f".o.mp4.{os.getpid()}.partial"
    compress_video(media.cfr, tmp_path / "a.mp4", keep_audio=True, fps=2, short_side=112, crf=30, threads=1,
                   timeout_s=99)
    cmd = calls[-1][0]
    assert calls[-1][3] == 99
    assert _options(cmd[3:-5]) == {"-acodec": "aac", "-b:a": "128k", "-crf": "30", "-f": "mp4",
                                   "-movflags": "+faststart", "-pix_fmt": "yuv420p", "-preset": "veryfast",
                                   "-threads": "1", "-vcodec": "libx264", "-vf": f"fps=2,{C.scale_filter(112)}"}
    r = compress_video(media.cfr, dst)
    assert (r.src, r.dst, r.status) == (str(media.cfr), str(dst), "skipped")


def test_refusals_name_the_file_and_the_cause(media, tmp_path, monkeypatch):
    from extractors import compress as C
    src = str(media.cfr)
    with pytest.raises(MediaError) as e:
        compress_video(src, src)
    assert str(e.value) == f"{src}: output path equals input path"
    with pytest.raises(MediaError) as e:
        compress_video(media.audio_only, tmp_path / "o.mp4")
    assert str(e.value) == f"{media.audio_only}: no video stream"
    monkeypatch.setattr(C, "_valid_output", lambda p: False)  # ffmpeg succeeds, the result is no video
    with pytest.raises(MediaError) as e:
        compress_video(src, tmp_path / "o.mp4")
    assert str(e.value) == f"{src}: encoded output does not probe as video"
    assert os.listdir(tmp_path) == []


def test_a_valid_output_has_video_frames_and_length(monkeypatch):
    from extractors import compress as C
    from extractors.probe import ProbeResult

    def info(**kw):
        base = dict(path="x", duration=2.0, fps=3.0, width=4, height=4, rotation=0, has_video=True,
                    has_audio=False, n_frames=6, codec="h264")
        return ProbeResult(**{**base, **kw})
    for kw, ok in (({}, True), ({"has_video": False}, False), ({"duration": 0.0}, False), ({"n_frames": 0}, False),
                   ({"has_video": False, "duration": 0.0}, False)):
        monkeypatch.setattr(C, "probe", lambda p, kw=kw: info(**kw))
        assert C._valid_output("x") is ok, kw


def test_truncation_is_flagged_past_the_tolerance_only():
    from extractors.compress import truncation_warning
    assert truncation_warning("v.mp4", 20.0, 17.0) == ""  # exactly 90 % less 1 s: tolerated
    assert truncation_warning("v.mp4", 20.0, 16.9) == ("v.mp4: only 16.9 s of the 20.0 s its container states "
                                                       "decode (a truncated or half-downloaded file?)")
    assert truncation_warning("v.mp4", 0.0, 0.0) == "" and truncation_warning("v.mp4", -1.0, 0.0) == ""
