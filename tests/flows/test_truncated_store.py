"""A half-downloaded video's warning is on its item in the store, and `vtr store info` lists it."""
import subprocess

from tests.extractors.test_truncated_video import half_downloaded


def test_the_warning_is_on_the_item_in_the_store(tmp_path, prefect_api):
    from flows.config import ExtractConfig
    from flows.extract import extract_dataset
    from storage import DONE, as_str, open_group, store_info

    videos = tmp_path / "videos"
    videos.mkdir()
    half_downloaded(videos / "half.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=15:duration=3", "-pix_fmt", "yuv420p", str(videos / "ok.mp4")],
                   check=True)
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,caption,split\nhalf,videos/half.mp4,a test card,train\n"
                        "ok,videos/ok.mp4,another test card,test\n")
    store = str(tmp_path / "s.zarr")
    extract_dataset(manifest=str(manifest), store=store, dataset="cards",
                    config=ExtractConfig(random_init=True, workers=1, steps=["probe", "compress"]))
    g = open_group(store, mode="r")
    assert (g["compress_state"][:] == DONE).all()
    err = as_str(g["compress_error"][:])
    assert "half-downloaded" in err[0] and err[1] == ""
    assert any(w.startswith("compress item 0: ") and "half-downloaded" in w for w in store_info(store)["warnings"])
