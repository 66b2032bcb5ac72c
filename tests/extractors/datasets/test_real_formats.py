"""Each reader on its dataset's real file structure, with the quirks of the real
distributions (``real_formats``): every one of these failed on the readers before issue 24."""
import json
import os
from collections import OrderedDict

import pytest

from extractors.annotations import AnnotationError, validate_video_id
from extractors.datasets import get_dataset, read_dataset

from .real_formats import (ANET_UNANNOTATED, EMPTY_CAPTION, MSVD, VIDEO_DIRS, TinyMedia, write_activitynet,
                           write_charades, write_didemo, write_lsmdc, write_msrvtt, write_msvd, write_vatex)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> TinyMedia:
    return TinyMedia(tmp_path_factory.mktemp("tiny_media"))


def test_activitynet_ids_with_dashes_unannotated_ids_and_v_files(tmp_path, media):
    want = write_activitynet(tmp_path, media)
    m = get_dataset("activitynet").read(tmp_path, n_val=0)
    assert m.video_ids == want["ids"]
    assert dict(zip(m.video_ids, m.video_paths)) == want["paths"]
    assert all((tmp_path / p).is_file() for p in m.video_paths)
    assert len(m.warnings) == 1 and all(k in m.warnings[0] for k in ANET_UNANNOTATED), m.warnings
    assert m.warnings[0].startswith(f"{tmp_path}: 2 listed id(s) have no usable annotation")
    assert m.splits == ["train"] * 3 + ["test"] * 2


def test_ids_take_any_number_of_leading_dashes_but_no_path_tricks():
    for vid in ("--1DO2V4K74", "---9CpRcKoU", "-_hbPLsZvvo_000012_000022"):
        assert validate_video_id(vid, "x") == vid
    for bad in ("---", "--../x", "-a/b", "a\\b", "a\x00b", "..", "-..x"):
        with pytest.raises(AnnotationError):
            validate_video_id(bad, "x")


def test_didemo_download_script_names(tmp_path, media):
    want = write_didemo(tmp_path, media)
    m = get_dataset("didemo").read(tmp_path)
    assert sorted(m.video_ids) == sorted(want["ids"])
    assert dict(zip(m.video_ids, m.video_paths)) == want["paths"]
    assert not m.warnings
    moments = json.loads((tmp_path / "train_data.json").read_text())
    assert "download_link" in moments[0] and "dl_link" not in moments[0]


def test_msrvtt_webm_fallback_and_drl_layout(tmp_path, media):
    want = write_msrvtt(tmp_path / "clip4clip", media)
    m = get_dataset("msrvtt").read(tmp_path / "clip4clip")
    by_id = dict(zip(m.video_ids, m.video_paths))
    assert all(by_id[v] == f"videos/all/{v}.webm" for v in want["webm"])
    assert all((tmp_path / "clip4clip" / p).is_file() for p in m.video_paths)
    write_msrvtt(tmp_path / "drl", media, video_dir="videos")
    m = read_dataset("msrvtt", tmp_path / "drl", video_dir="videos")
    assert all((tmp_path / "drl" / p).is_file() and p.count("/") == 1 for p in m.video_paths)


def test_msrvtt_n_val_0_keeps_all_9000_training_videos(tmp_path, media):
    write_msrvtt(tmp_path, media, n_train=9000, n_test=1000, make_videos=False)
    m = get_dataset("msrvtt").read(tmp_path, n_val=0)
    assert (m.splits.count("train"), m.splits.count("val"), m.splits.count("test")) == (9000, 0, 1000)
    assert m.n_val == 0
    m = get_dataset("msrvtt").read(tmp_path)
    assert (m.splits.count("train"), m.splits.count("val")) == (8500, 500) and m.n_val == 500


@pytest.mark.parametrize("test_list", [True, False])
def test_vatex_official_json(tmp_path, media, test_list):
    want = write_vatex(tmp_path, media, test_list=test_list)
    m = get_dataset("vatex").read(tmp_path, n_val=0)
    assert [v for v, s in zip(m.video_ids, m.splits) if s == "train"] == want["train"]
    assert [v for v, s in zip(m.video_ids, m.splits) if s == "test"] == want["test"]
    assert all(m.caption_video.count(i) == 10 for i in range(m.n_videos))
    assert m.caption_text[0] == "a person does thing 0 in --07"  # English, not chCap
    assert m.urls[0] == "https://www.youtube.com/watch?v=--07WQ2iBlw"
    assert (m.start_times[0], m.end_times[0]) == (1.0, 11.0)
    assert all((tmp_path / p).is_file() for p in m.video_paths) and not m.warnings


@pytest.mark.parametrize("container", ["defaultdict", "OrderedDict"])
def test_msvd_pickled_containers_and_an_empty_caption(tmp_path, media, container):
    from collections import defaultdict
    write_msvd(tmp_path, media, container={"defaultdict": defaultdict, "OrderedDict": OrderedDict}[container])
    m = get_dataset("msvd").read(tmp_path, video_dir=VIDEO_DIRS["msvd"])
    assert m.video_ids == [v for ids in MSVD.values() for v in ids]
    assert len(m.caption_text) == 3 * 8 - 1
    assert len(m.warnings) == 1 and f"{EMPTY_CAPTION[0]!r}[{EMPTY_CAPTION[1]}] (empty)" in m.warnings[0]
    assert all((tmp_path / p).is_file() for p in m.video_paths)


def test_msvd_pickle_still_refuses_code(tmp_path, media):
    import pickle
    write_msvd(tmp_path, media)
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({"a": os.system}))
    with pytest.raises(AnnotationError, match="refusing to load"):
        get_dataset("msvd").read(tmp_path)


def test_lsmdc_lines_with_trailing_tabs_and_spaces(tmp_path, media):
    want = write_lsmdc(tmp_path, media)
    m = get_dataset("lsmdc").read(tmp_path)
    assert m.video_ids == want["ids"] and not m.warnings
    assert m.caption_text[0] == 'SOMEONE says "hi, there" 0.' and m.caption_text[1] == "SOMEONE looks 0."
    assert all((tmp_path / p).is_file() for p in m.video_paths)


def test_charades_empty_script_leaves_one_video_out(tmp_path, media):
    want = write_charades(tmp_path, media)
    m = get_dataset("charades").read(tmp_path, n_val=0, video_dir=VIDEO_DIRS["charades"])
    assert m.video_ids == want["ids"]
    assert len(m.warnings) == 1 and f"video {want['empty']!r}: field 'script' is empty" in m.warnings[0]


@pytest.mark.parametrize("name,n_val,expected", [("msvd", 0, 0), ("msvd", 1, 1), ("msvd", None, 2), ("msvd", 5, 2),
                                                 ("lsmdc", 0, 0), ("didemo", 0, 0), ("charades", 0, 0),
                                                 ("activitynet", 1, 1), ("vatex", 1, 1)])
def test_n_val_for_every_dataset(tmp_path, media, name, n_val, expected):
    writer = {"msvd": write_msvd, "lsmdc": write_lsmdc, "didemo": write_didemo, "charades": write_charades,
              "activitynet": write_activitynet, "vatex": write_vatex}[name]
    writer(tmp_path, media)
    opts = {"n_val": n_val} if n_val is not None else {}
    m = read_dataset(name, tmp_path, **opts, **({"video_dir": VIDEO_DIRS[name]} if name in VIDEO_DIRS else {}))
    assert m.splits.count("val") == expected and m.n_val == n_val


def test_two_files_for_one_id_prefer_mp4_and_warn(tmp_path, media):
    write_msrvtt(tmp_path, media, webm=())
    for ext in (".mov", ".webm", ".avi", ".mkv"):
        media.put(tmp_path / "videos" / "all" / "other" / f"video0{ext}")
    os.remove(tmp_path / "videos/all/video1.mp4")
    for ext in (".mov", ".avi", ".mkv"):
        media.put(tmp_path / "videos" / "all" / f"video1{ext}")
    m = get_dataset("msrvtt").read(tmp_path)
    assert m.video_paths[:2] == ["videos/all/video0.mp4", "videos/all/video1.mkv"]
    assert len(m.warnings) == 2
    assert m.warnings[0].endswith("5 files for video 'video0' (videos/all/video0.mp4, videos/all/other/video0.avi, "
                                  "videos/all/other/video0.mkv, videos/all/other/video0.mov, "
                                  "videos/all/other/video0.webm): using videos/all/video0.mp4")


def test_unparseable_annotation_file_stops_naming_file_and_line(tmp_path, media):
    write_activitynet(tmp_path, media)
    (tmp_path / "train.json").write_text('{"v_--1DO2V4K74": {"sentences": ["a",]}}')
    with pytest.raises(AnnotationError, match=r"train.json: malformed JSON at line 1, column \d+"):
        get_dataset("activitynet").read(tmp_path)
    write_charades(tmp_path, media)
    with open(tmp_path / "Charades_v1_test.csv", "a", newline="") as f:
        f.write('X1Y2Z,S1,Hall,6,7,Yes,"never closed\n')
    with pytest.raises(AnnotationError, match=r"Charades_v1_test.csv: line \d+: malformed CSV"):
        get_dataset("charades").read(tmp_path)


def test_vatex_official_entries_that_cannot_be_read_are_one_warning(tmp_path, media):
    """Each unusable entry of an official file is named in one warning; the entries after
    it are read; empty English captions are dropped from a kept entry."""
    write_vatex(tmp_path, media)
    path = tmp_path / "vatex_training_v1.0.json"
    entries = json.loads(path.read_text())
    first = entries[0]["videoID"]
    bad = ["a string", {"enCap": ["x"]}, {"videoID": "a/b", "enCap": ["x"]},
           {"videoID": entries[1]["videoID"], "enCap": "one caption"},
           {**entries[0], "enCap": ["", "  ", 7] + entries[0]["enCap"][3:]}]
    path.write_text(json.dumps(bad + entries[2:]))
    m = read_dataset("vatex", tmp_path, n_val=0)
    assert m.warnings == [
        f"{path}: 5 problem(s) in entries (skipped): [0] field 'videoID': video id None is not a plain name "
        "(rejected), [1] field 'videoID': video id None is not a plain name (rejected), [2] field 'videoID': "
        f"video id 'a/b' is not a plain name (rejected), [3] {entries[1]['videoID']!r}: field 'enCap' is not a "
        f"list, [4] {first!r}: 3 empty caption(s)"]
    i = m.video_ids.index(first)
    assert [t for t, v in zip(m.caption_text, m.caption_video) if v == i] == entries[0]["enCap"][3:]
    assert entries[1]["videoID"] not in m.video_ids
    assert all(e["videoID"] in m.video_ids for e in entries[2:])
    path.write_text(json.dumps({"videoID": first}))
    with pytest.raises(AnnotationError) as e:
        read_dataset("vatex", tmp_path, n_val=0)
    assert str(e.value) == f"{path}: top level is not a list of {{videoID, enCap}} entries"
