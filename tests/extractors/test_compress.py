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
