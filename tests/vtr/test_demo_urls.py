"""The demo contacts nothing beyond 127.0.0.1: it refuses a store whose URLs point elsewhere."""
from typer.testing import CliRunner

from storage import StoreLayout, create_store
from vtr.cli import app


def test_demo_refuses_a_store_with_remote_urls(tmp_path):
    # a store left by an older demo, whose sample named YouTube URLs
    (tmp_path / "demo").mkdir()
    create_store(str(tmp_path / "demo" / "msrvtt.zarr"), dataset="msrvtt", video_ids=["video0", "video1"],
                 splits=["train", "test"], caption_text=["a", "b"], caption_video=[0, 1],
                 urls=["https://www.youtube.com/watch?v=vtrsample0000", ""],
                 layout=StoreLayout(n_videos=2, n_captions=2))
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--n-videos", "4"])
    out = r.output.strip()
    assert r.exit_code == 1 and out.count("\n") == 0, out
    assert out.startswith("error: ") and "youtube.com" in out and "--data-root" in out
    assert not (tmp_path / "demo" / "data").exists()  # refused before any work
