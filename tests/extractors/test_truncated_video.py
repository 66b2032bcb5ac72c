"""A half-downloaded mp4 whose container promises far more than decodes: compressed, but
the item carries a warning saying so (issue 23; in the store: tests/flows/test_truncated_store.py)."""
import subprocess

import pytest

from extractors.compress import compress_video, truncation_warning


def half_downloaded(path, seconds=8.0, keep=0.4):
    # faststart: the index (with the whole duration) comes first, as in a file streamed to disk
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size=160x120:rate=15:duration={seconds}", "-pix_fmt", "yuv420p",
                    "-movflags", "+faststart", str(path)], check=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_a_half_downloaded_video_is_compressed_with_a_warning(tmp_path):
    src = half_downloaded(tmp_path / "half.mp4")
    r = compress_video(src, tmp_path / "out.mp4")
    assert r.status == "compressed"
    assert "of the 8.0 s its container states decode" in r.warning and str(src) in r.warning
    whole = tmp_path / "whole.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=15:duration=4", "-pix_fmt", "yuv420p", str(whole)], check=True)
    assert compress_video(whole, tmp_path / "w.mp4").warning == ""


@pytest.mark.parametrize("container,decoded,warned", [(30.0, 10.0, True), (30.0, 28.5, False), (1.5, 0.4, False),
                                                      (0.0, 3.0, False)])
def test_the_tolerance(container, decoded, warned):
    assert bool(truncation_warning("v.mp4", container, decoded)) is warned
