import pytest

from extractors.errors import MediaError
from extractors.probe import probe


def test_probe_constant_rate_video(media):
    p = probe(media.cfr)
    assert (p.width, p.height, p.fps, p.rotation) == (160, 120, 25.0, 0)
    assert p.has_video and p.has_audio and p.codec == "h264" and not p.variable_frame_rate
    assert p.duration == pytest.approx(4.2, abs=0.05) and p.n_frames == 105


def test_probe_portrait_rotated_and_audio_flags(media):
    assert (probe(media.portrait).width, probe(media.portrait).height) == (120, 160)
    r = probe(media.rotated)
    assert (r.width, r.height) == (120, 160) and r.rotation in (90, 270)
    assert not probe(media.noaudio).has_audio
    a = probe(media.audio_only)
    assert a.has_audio and not a.has_video and a.fps == 0


def test_probe_vfr_short_and_long(media):
    assert probe(media.vfr).variable_frame_rate
    assert probe(media.short).duration == pytest.approx(0.2, abs=0.05)
    assert probe(media.tenmin).duration == pytest.approx(600, abs=1)


def test_probe_odd_names(media):
    assert probe(media.odd_name).has_audio
    assert probe(media.dash_name).width == 160  # not taken for an ffprobe option


@pytest.mark.parametrize("name,cause", [("zero", "empty file"), ("text", "ffprobe"),
                                        ("truncated", "ffprobe")])
def test_probe_bad_files_raise_one_line(media, name, cause):
    path = getattr(media, name)
    with pytest.raises(MediaError) as e:
        probe(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and cause in msg and "\n" not in msg


def test_probe_missing_file(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        probe(tmp_path / "nope.mp4")


def test_probe_error_has_no_working_directory_glued_in(media, monkeypatch):
    """D12: a relative path; the tool's own cause, without the path ffprobe puts in front."""
    monkeypatch.chdir(media.dir)
    for name in ("text.mp4", "truncated.mp4"):
        with pytest.raises(MediaError) as e:
            probe(name)
        assert str(e.value) == f"{name}: {e.value.cause}"
        assert str(media.dir) not in str(e.value) and "/" not in e.value.cause
        assert e.value.cause == "ffprobe: Invalid data found when processing input"


def test_stalled_input_is_killed(tmp_path):
    """A FIFO nobody writes blocks ffprobe forever: the bound kills it."""
    import os
    import time
    fifo = tmp_path / "stall.mp4"
    os.mkfifo(fifo)
    t = time.perf_counter()
    with pytest.raises(MediaError) as e:
        probe(fifo, timeout_s=1.0)
    assert str(e.value) == f"{fifo}: ffprobe timed out after 1 s" and time.perf_counter() - t < 10
