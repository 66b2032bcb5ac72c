"""Bad input that used to end in a traceback or do the wrong thing quietly (issue 23): a null
video list, NaN or reversed crawl windows; and the id rule (any printable Unicode file name
passes, only unsafe names are refused)."""
import json
import math

import pytest
from typer.testing import CliRunner

from extractors.annotations import AnnotationError, read_msrvtt, validate_video_id
from extractors.crawl import crawl_audio, window_problem
from vtr.cli import app

from .test_annotations import _write_root


@pytest.mark.parametrize("field", ["videos", "sentences"])
def test_a_null_list_in_the_annotation_json_is_one_line(tmp_path, field):
    root = _write_root(tmp_path / "r")
    data = json.loads((root / "MSRVTT_data.json").read_text())
    data[field] = None
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=f"MSRVTT_data.json: field '{field}' is null, not a list"):
        read_msrvtt(root)
    r = CliRunner().invoke(app, ["extract", "--data-root", str(root), "--store", str(tmp_path / "s.zarr"),
                                 "--random-init", "--steps", "probe"])
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.exit_code == 1 and len(errors) == 1 and "Traceback" not in r.output, r.output
    assert f"field '{field}' is null" in errors[0]
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("start,end,says", [(math.nan, 5.0, "is not a number"), (1.0, math.nan, "is not a number"),
                                            (5.0, 3.0, "ends at 3.0 s, not after its start at 5.0 s"),
                                            (2.0, 2.0, "not after its start")])
def test_a_nan_or_reversed_window_is_a_failed_crawl_with_its_cause(tmp_path, start, end, says):
    # refused before any download: the URL is never fetched (file:// is allowed here)
    src = tmp_path / "a.mp4"
    src.write_bytes(b"")
    r = crawl_audio(src.as_uri(), start, end, tmp_path / "x.wav", allow_file_urls=True, retries=0)
    assert r.status == "failed" and says in r.error and "\n" not in r.error
    assert not (tmp_path / "x.wav").exists()


def test_whole_file_and_plain_windows_pass():
    assert window_problem(None, None) is None and window_problem(0.0, 10.0) is None
    assert window_problem(None, 4.0) is None and window_problem(3.0, None) is None


@pytest.mark.parametrize("vid", ["vidéo_1", "видео", "動画-07", "clip (1)", "a..b", ".hidden", "-4wsuPCjDBc_5_15",
                                 "x" * 250])
def test_printable_unicode_file_names_are_accepted(vid):
    assert validate_video_id(vid, "here") == vid


@pytest.mark.parametrize("vid", ["", ".", "..", "-", "a/b", "a\\b", "x\x00y", "tab\there", "nl\n",
                                 "x" * 252])
def test_only_unsafe_names_are_refused(vid):
    with pytest.raises(AnnotationError, match="rejected"):
        validate_video_id(vid, "here")
