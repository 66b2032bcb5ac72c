"""Each dataset's sample read back: counts per split, ids, paths, URLs; and the sizes its
spec declares."""
import csv
import json
import os
import pickle

import pytest

from extractors.datasets import get_dataset

SAMPLED = ("msvd", "vatex", "activitynet", "didemo", "lsmdc", "charades")

# (videos, captions) per split, as each sample writer documents its layout
COUNTS = {
    "msvd": {"train": (4, 15), "val": (2, 9), "test": (2, 7)},
    "vatex": {"train": (5, 25), "val": (1, 5), "test": (2, 10)},
    "activitynet": {"train": (4, 4), "val": (1, 1), "test": (3, 3)},
    "didemo": {"train": (4, 4), "val": (2, 2), "test": (2, 2)},
    "lsmdc": {"train": (4, 8), "val": (2, 2), "test": (2, 2)},
    "charades": {"train": (5, 5), "val": (1, 1), "test": (2, 2)},
}


def _counts(m):
    out = {}
    for s in ("train", "val", "test"):
        vids = {i for i, sp in enumerate(m.splits) if sp == s}
        out[s] = (len(vids), sum(v in vids for v in m.caption_video))
    return out


@pytest.mark.parametrize("name", SAMPLED)
def test_sample_counts_per_split(sample_root, name):
    root = sample_root(name)
    m = get_dataset(name).read(root)
    assert m.dataset == name and m.root == str(root)
    assert _counts(m) == COUNTS[name]
    assert len(m.video_paths) == len(m.urls) == len(m.start_times) == len(m.end_times) == m.n_videos
    assert all((root / p).is_file() for p in m.video_paths)
    assert all(not os.path.isabs(p) for p in m.video_paths)
    assert sorted(set(m.caption_video)) == list(range(m.n_videos))  # every video has text
    assert m.caption_video == sorted(m.caption_video)  # grouped by video: multi-sentence cut-offs


@pytest.mark.parametrize("name", SAMPLED)
def test_manifest_goes_into_a_store(sample_root, tmp_path, name):
    from storage import create_store, open_store
    m = get_dataset(name).read(sample_root(name))
    create_store(tmp_path / "s.zarr", **m.store_kwargs())
    ds = open_store(tmp_path / "s.zarr")
    assert list(ds["video"].values) == m.video_ids and list(ds["split"].values) == m.splits
    assert ds["caption_text"].values.tolist() == m.caption_text


@pytest.mark.parametrize("name", SAMPLED)
def test_read_is_deterministic(sample_root, name):
    a, b = get_dataset(name).read(sample_root(name)), get_dataset(name).read(sample_root(name))
    assert a == b


@pytest.mark.parametrize("name", ["msvd", "vatex", "activitynet"])
def test_youtube_ids_with_a_leading_dash(sample_root, name):
    m = get_dataset(name).read(sample_root(name))
    dashed = [v for v in m.video_ids if v.startswith("-")]
    assert dashed
    i = m.video_ids.index(dashed[0])
    assert os.path.basename(m.video_paths[i]).startswith(dashed[0])
    assert m.urls[i] == f"https://www.youtube.com/watch?v={dashed[0][:11]}"


def test_windows_come_from_the_ids(sample_root):
    m = get_dataset("msvd").read(sample_root("msvd"), youtube_url="http://127.0.0.1:9/{id}.m4a")
    i = 1  # the id whose YouTube part holds a '_'
    yt, start, end = m.video_ids[i].rsplit("_", 2)
    assert "_" in yt and len(yt) == 11
    assert (m.urls[i], m.start_times[i], m.end_times[i]) == (f"http://127.0.0.1:9/{yt}.m4a", float(start), float(end))
    v = get_dataset("vatex").read(sample_root("vatex"))
    assert all(e - s == 10.0 for s, e in zip(v.start_times, v.end_times))
    a = get_dataset("activitynet").read(sample_root("activitynet"))  # the whole video
    assert set(a.start_times) == set(a.end_times) == {-1.0}


@pytest.mark.parametrize("name", ["didemo", "lsmdc", "charades"])
def test_own_audio_datasets_have_no_urls(sample_root, name):
    m = get_dataset(name).read(sample_root(name))
    assert set(m.urls) == {""} and set(m.start_times) == {-1.0}


def test_msvd_captions_join_word_lists(sample_root):
    root = sample_root("msvd")
    with open(root / "raw-captions.pkl", "rb") as f:
        raw = pickle.load(f)
    m = get_dataset("msvd").read(root)
    vid = m.video_ids[-1]
    i = m.video_ids.index(vid)
    assert [t for t, v in zip(m.caption_text, m.caption_video) if v == i] == [" ".join(w) for w in raw[vid]]


def test_vatex_holds_validation_out_of_train(sample_root):
    root = sample_root("vatex")
    train = set((root / "train_list.txt").read_text().split())
    a = get_dataset("vatex").read(root, seed=1)
    b = get_dataset("vatex").read(root, seed=1, n_val=0)
    val = {v for v, s in zip(a.video_ids, a.splits) if s == "val"}
    assert len(val) == 1 and val <= train
    assert "val" not in b.splits


def test_didemo_paragraph_joins_descriptions_in_file_order(sample_root):
    root = sample_root("didemo")
    moments = json.loads((root / "test_data.json").read_text())
    m = get_dataset("didemo").read(root)
    vid = moments[0]["video"]
    expected = " ".join(x["description"] for x in moments if x["video"] == vid)
    assert m.caption_text[m.caption_video.index(m.video_ids.index(vid))] == expected
    assert {os.path.splitext(v)[1] for v in m.video_ids} == {".mov", ".mp4", ".avi", ".m4v"}


def test_didemo_paragraph_by_hand(tmp_path):
    for s in ("train", "val", "test"):
        (tmp_path / f"{s}_list.txt").write_text("")
        (tmp_path / f"{s}_data.json").write_text("[]")
    (tmp_path / "test_list.txt").write_text("1@N05_2_ab.mov\nunannotated.mp4\n")
    (tmp_path / "test_data.json").write_text(json.dumps([
        {"description": "a dog runs in", "video": "1@N05_2_ab.mov", "times": [[0, 0]]},
        {"description": "not listed", "video": "other.mp4", "times": [[0, 0]]},
        {"description": "the dog sits", "video": "1@N05_2_ab.mov", "times": [[1, 1]]}]))
    m = get_dataset("didemo").read(tmp_path)
    assert m.video_ids == ["1@N05_2_ab.mov"] and m.caption_text == ["a dog runs in the dog sits"]
    assert m.video_paths == ["videos/1@N05_2_ab.mov"]  # not on disk: kept, fails in the flow


def test_activitynet_paragraph_keeps_leading_spaces(tmp_path):
    (tmp_path / "train_ids.json").write_text(json.dumps(["v_AbCdEfGhIjK", "v_-9zYxWvUtSr"]))
    (tmp_path / "val_ids.json").write_text(json.dumps(["v_QrStUvWxYz0"]))
    (tmp_path / "train.json").write_text(json.dumps({
        "v_AbCdEfGhIjK": {"duration": 82.7, "timestamps": [[0.8, 19.9], [17.4, 60.8]],
                          "sentences": ["A girl ties her shoes.", " She starts to run."]},
        "v_-9zYxWvUtSr": {"duration": 5, "timestamps": [[0, 5]], "sentences": ["One."]}}))
    (tmp_path / "val_1.json").write_text(json.dumps({"v_QrStUvWxYz0": {"sentences": ["x", "y"]}}))
    m = get_dataset("activitynet").read(tmp_path, n_val=0)
    assert m.video_ids == ["AbCdEfGhIjK", "-9zYxWvUtSr", "QrStUvWxYz0"]
    assert m.caption_text == ["A girl ties her shoes.  She starts to run.", "One.", "x y"]
    assert m.splits == ["train", "train", "test"]
    assert m.video_paths[1] == "videos/-9zYxWvUtSr.mp4"


def test_activitynet_v_prefixed_file_is_the_video(sample_copy):
    root = sample_copy("activitynet")
    m0 = get_dataset("activitynet").read(root)
    vid = m0.video_ids[0]
    os.rename(root / m0.video_paths[0], root / "videos" / f"v_{vid}.mp4")
    m = get_dataset("activitynet").read(root)
    assert m.video_paths[0] == f"videos/v_{vid}.mp4" and not m.warnings


def test_lsmdc_movie_folders_and_literal_quotes(sample_root):
    m = get_dataset("lsmdc").read(sample_root("lsmdc"))
    assert all(p.split("/")[1] == v.rsplit("_", 1)[0] for v, p in zip(m.video_ids, m.video_paths))
    assert all(t.startswith("SOMEONE ") and '"' in t and "," in t for t in m.caption_text)


def test_charades_script_is_the_text(sample_root):
    root = sample_root("charades")
    with open(root / "Charades_v1_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    m = get_dataset("charades").read(root)
    for r in rows:
        assert m.caption_text[m.caption_video.index(m.video_ids.index(r["id"]))] == r["script"]
        assert "," in r["script"] and len(r["id"]) == 5


def test_charades_prefers_mp4_over_webm(sample_copy):
    root = sample_copy("charades")
    m0 = get_dataset("charades").read(root)
    (root / "videos" / f"{m0.video_ids[0]}.webm").write_bytes(b"")
    (root / "videos" / f"{m0.video_ids[1]}.webm").write_bytes(b"")
    os.remove(root / m0.video_paths[1])
    m = get_dataset("charades").read(root)
    assert m.video_paths[:2] == [m0.video_paths[0], f"videos/{m0.video_ids[1]}.webm"]


def test_videos_are_found_in_any_subfolder(sample_copy):
    root = sample_copy("vatex")
    m0 = get_dataset("vatex").read(root)
    (root / "videos" / "part2").mkdir()
    os.rename(root / m0.video_paths[3], root / "videos" / "part2" / f"{m0.video_ids[3]}.webm")
    m = get_dataset("vatex").read(root)
    assert m.video_paths[3] == f"videos/part2/{m0.video_ids[3]}.webm"


def test_video_dir_option(sample_copy):
    root = sample_copy("msvd")
    os.rename(root / "videos", root / "YouTubeClips")
    m = get_dataset("msvd").read(root, video_dir="YouTubeClips")
    assert all(p.startswith("YouTubeClips/") and (root / p).is_file() for p in m.video_paths)
