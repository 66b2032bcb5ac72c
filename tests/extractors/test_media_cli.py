import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from vtr.commands import media as media_cli


@pytest.fixture(scope="module")
def cli():
    root = typer.Typer()
    media_cli.register(root)
    runner = CliRunner()
    return lambda *args: runner.invoke(root, ["media", *map(str, args)])


def _vtr() -> str:
    exe = Path(sys.executable).with_name("vtr")
    if not exe.exists():
        pytest.fail("the vtr entry point is not installed in this environment")
    return str(exe)


def test_probe_json_and_bad_input_exit_status(media):
    out = subprocess.run([_vtr(), "media", "probe", str(media.rotated)], capture_output=True, text=True)
    assert out.returncode == 0
    info = json.loads(out.stdout)
    assert (info["width"], info["height"], info["has_audio"]) == (120, 160, False)
    bad = subprocess.run([_vtr(), "media", "probe", str(media.text)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [f"error: {media.text}: ffprobe: Invalid data found "
                                               "when processing input"]


def test_probe_folder_goes_on_after_bad_files(media, cli):
    r = cli("probe", media.dir)
    lines = [json.loads(x) for x in r.stdout.strip().splitlines() if x.startswith("{")]
    assert r.exit_code == 1 and len(lines) >= 8  # bad files reported, the rest probed
    assert {Path(x["path"]).name for x in lines} >= {"cfr.mp4", "-dash.mp4", "vidéo avec espaces ü.mp4"}


def test_compress_file_and_folder(media, cli, tmp_path):
    r = cli("compress", media.portrait, tmp_path / "p.mp4", "--keep-audio")
    assert r.exit_code == 0, r.output
    src = tmp_path / "in"
    src.mkdir()
    for p in (media.short, media.noaudio, media.zero):
        shutil.copy(p, src / p.name)
    r = cli("compress", src, tmp_path / "out", "--drop-audio", "--workers", "2")
    assert r.exit_code == 1 and "compressed 2, skipped 0, failed 1" in r.output
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == ["noaudio.mp4", "short.mp4"]


def test_frames_command(media, cli, tmp_path):
    out = tmp_path / "f.npy"
    r = cli("frames", media.cfr, "--out", out, "--backend", "pyav")
    assert r.exit_code == 0, r.output
    x, mask = np.load(out), np.load(tmp_path / "f.mask.npy")
    assert x.shape == (12, 224, 224, 3) and x.dtype == np.uint8 and mask.tolist() == [True] * 5 + [False] * 7
    r = cli("frames", media.truncated, "--out", tmp_path / "t.npy")
    assert r.exit_code == 1 and r.output.strip().startswith(f"error: {media.truncated}: ")
    assert not (tmp_path / "t.npy").exists()


def test_fbank_command(media, cli, tmp_path):
    r = cli("fbank", media.speech, "--out", tmp_path / "a.npy", "--shift", "fit-1024")
    assert r.exit_code == 0, r.output
    x = np.load(tmp_path / "a.npy")
    assert x.shape == (1024, 128) and x.dtype == np.float32
    r = cli("fbank", media.noaudio, "--out", tmp_path / "b.npy")
    assert r.exit_code == 1 and "no audio stream" in r.output
    assert cli("fbank", media.speech, "--out", tmp_path / "c.npy", "--shift", "2ms").exit_code == 2


def test_crawl_audio_over_data_root(media, http_server, cli, tmp_path):
    root = tmp_path / "data"
    (root / "videos" / "all").mkdir(parents=True)
    shutil.copy(media.cfr, http_server.dir / "remote.mp4")
    shutil.copy(media.cfr, root / "videos" / "all" / "video0.mp4")      # has audio
    shutil.copy(media.noaudio, root / "videos" / "all" / "video1.mp4")  # crawled
    shutil.copy(media.noaudio, root / "videos" / "all" / "video2.mp4")  # 404
    shutil.copy(media.text, root / "videos" / "all" / "video3.mp4")     # bad file, bad scheme
    urls = [f"{http_server.url}/remote.mp4", f"{http_server.url}/remote.mp4",
            f"{http_server.url}/gone.mp4", "ftp://127.0.0.1/x"]
    data = {"videos": [{"video_id": f"video{i}", "url": u, "start time": 0.5, "end time": 2.5}
                       for i, u in enumerate(urls)],
            "sentences": [{"video_id": f"video{i}", "caption": f"c{i}"} for i in range(4)]}
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    for name in ("9k", "7k"):
        (root / f"MSRVTT_train.{name}.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\n")
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr3,video3,c3\n")
    r = cli("crawl-audio", "--data-root", root, "--retries", "0", "--socket-timeout", "2")
    recs = {x["video_id"]: x for x in map(json.loads, (l for l in r.stdout.splitlines() if l.startswith("{")))}
    assert r.exit_code == 1
    assert [recs[f"video{i}"]["status"] for i in range(4)] == ["original", "crawled", "failed", "failed"]
    assert (root / "audio_crawled" / "video1.wav").is_file()
    assert "404" in recs["video2"]["error"] and "probe_error" in recs["video3"]
    assert "original audio 1, crawled 1, failed 2" in r.output


def test_crawl_audio_from_generic_manifest_with_file_urls(media, cli, tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    shutil.copy(media.noaudio, root / "a b.mp4")
    m = root / "m.jsonl"
    m.write_text(json.dumps({"video_id": "a", "path": "a b.mp4", "caption": "x", "url": media.cfr.as_uri(),
                             "start_time": 1, "end_time": 2}) + "\n")
    r = cli("crawl-audio", "--data-root", root, "--manifest", m, "--retries", "0")
    assert r.exit_code == 1 and "file URLs are not crawled" in r.output
    r = cli("crawl-audio", "--data-root", root, "--manifest", m, "--allow-file-urls", "--out-dir", "wav")
    assert r.exit_code == 0, r.output
    assert (root / "wav" / "a.wav").is_file() and "crawled 1, failed 0" in r.output
