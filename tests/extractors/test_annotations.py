import csv
import json

import pytest

from extractors.annotations import AnnotationError, read_manifest_file, read_msrvtt, val_size, validate_video_id


def _write_root(root, *, coco=False, n=30, test_ids=range(25, 30), extra_videos=()):
    root.mkdir(parents=True, exist_ok=True)
    videos = [{"video_id": f"video{i}", "url": f"https://www.youtube.com/watch?v=x{i}",
               "start time": 1.5 * i, "end time": 1.5 * i + 10, "split": "train", "category": 1, "id": i}
              for i in range(n)] + list(extra_videos)
    caps = [(f"video{i}", f"caption {k} of video {i}") for i in range(n) for k in range(3)]
    if coco:
        data = {"videos": videos, "annotations": [{"image_id": v, "caption": c} for v, c in caps]}
    else:
        data = {"videos": videos, "sentences": [{"video_id": v, "caption": c, "sen_id": k}
                                                 for k, (v, c) in enumerate(caps)]}
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    train = [f"video{i}" for i in range(n) if i not in test_ids]
    for name, ids in (("9k", train), ("7k", train[:15])):
        with open(root / f"MSRVTT_train.{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id"])
            w.writerows([v] for v in ids)
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for k, i in enumerate(test_ids):
            w.writerow([f"ret{k}", f"msr{i}", f"video{i}", f"caption 2 of video {i}"])
    return root


@pytest.mark.parametrize("coco", [False, True])
def test_msrvtt_both_json_layouts(tmp_path, coco):
    m = read_msrvtt(_write_root(tmp_path / "r", coco=coco), n_val=500)
    assert m.n_videos == 30 and len(m.caption_text) == 90
    assert m.splits.count("test") == 5 and m.splits.count("val") == 10  # the floor: 10 of 25
    i = m.video_ids.index("video26")
    assert m.splits[i] == "test" and m.video_paths[i] == "videos/all/video26.mp4"
    assert m.urls[i].endswith("x26") and m.start_times[i] == 39.0 and m.end_times[i] == 49.0
    first = m.caption_video.index(i)
    assert m.caption_text[first] == "caption 2 of video 26"  # the 1k-A sentence comes first
    assert max(m.caption_video) == m.n_videos - 1


def test_validation_holdout_is_seeded_and_from_train(tmp_path):
    root = _write_root(tmp_path / "r")
    a, b, c = read_msrvtt(root, seed=1), read_msrvtt(root, seed=1), read_msrvtt(root, seed=2)
    val = lambda m: {v for v, s in zip(m.video_ids, m.splits) if s == "val"}  # noqa: E731
    assert val(a) == val(b) and val(a) != val(c)
    assert all(int(v[5:]) < 25 for v in val(a))


@pytest.mark.parametrize("n_train,n_val,want", [
    (9000, 500, 500),  # MSR-VTT 9k: n_val, under a tenth
    (9000, 2000, 900),  # capped at a tenth
    (60, 500, 10),  # the floor: 10 videos, not 6
    (18, 500, 10),  # the 24-video sample's train list: training keeps 8
    (15, 500, 10),  # training keeps a third
    (14, 500, 1),  # 10 would leave training 4: a tenth, at least one
    (9, 500, 1), (1, 500, 0),
    (60, 3, 3), (60, 0, 0),  # asked for fewer: `vtr train` warns
])
def test_val_size_floor(n_train, n_val, want):
    assert val_size(n_train, n_val) == want


def test_train_7k_list(tmp_path):
    m = read_msrvtt(_write_root(tmp_path / "r"), train_list="7k", n_val=0)
    assert m.n_videos == 20 and m.splits.count("train") == 15
    with pytest.raises(AnnotationError, match="train_list"):
        read_msrvtt(tmp_path / "r", train_list="8k")


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "a\\b", "..", "x\x00y", "", "-", "---", "-../x"])
def test_unsafe_ids_rejected(tmp_path, bad):
    root = _write_root(tmp_path / "r", extra_videos=[{"video_id": bad, "url": "", "start time": 0,
                                                       "end time": 1}])
    with pytest.raises(AnnotationError, match=r"MSRVTT_data.json: videos\[30\]: field 'video_id'.*rejected"):
        read_msrvtt(root)


@pytest.mark.parametrize("vid", ["-4wsuPCjDBc_5_15", "-9zYxWvUtSr", "-rf", "Ab3dEf9hIjK_000012_000022",
                                 "--1DO2V4K74", "---9CpRcKoU", "--rf"])
def test_youtube_ids_with_leading_dashes_accepted(vid):
    assert validate_video_id(vid, "here") == vid


def test_unsafe_id_in_csv_names_line(tmp_path):
    root = _write_root(tmp_path / "r")
    with open(root / "MSRVTT_train.9k.csv", "a") as f:
        f.write("--output=/tmp/x\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_train.9k.csv: line 27: .*rejected"):
        read_msrvtt(root)


def test_malformed_json_names_line(tmp_path):
    root = _write_root(tmp_path / "r")
    (root / "MSRVTT_data.json").write_text('{"videos": [\n{"video_id": "video1",}\n]}')
    with pytest.raises(AnnotationError, match=r"MSRVTT_data.json: malformed JSON at line 2"):
        read_msrvtt(root)


def test_caption_not_a_string_names_field(tmp_path):
    root = _write_root(tmp_path / "r")
    data = json.loads((root / "MSRVTT_data.json").read_text())
    data["sentences"][4]["caption"] = None
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"sentences\[4\]: field 'caption'"):
        read_msrvtt(root)


def test_malformed_csv_names_line_and_column(tmp_path):
    root = _write_root(tmp_path / "r")
    with open(root / "MSRVTT_JSFUSION_test.csv", "a") as f:
        f.write('ret9,msr9,video9,"unterminated\n')
    with pytest.raises(AnnotationError, match=r"MSRVTT_JSFUSION_test.csv: line \d+"):
        read_msrvtt(root)
    (root / "MSRVTT_train.9k.csv").write_text("vid\nvideo1\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_train.9k.csv: line 1: no column 'video_id'"):
        read_msrvtt(root)


def test_generic_csv_manifest(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("video_id,path,caption,split\n"
                 "a,clips/a.mp4,a dog runs,train\n"
                 "a,clips/a.mp4,the dog is running,train\n"
                 "b,clips/b c.mp4,a cat sleeps,validate\n"
                 "c,clips/c.mp4,rain on a window,test\n", encoding="utf-8")
    m = read_manifest_file(p)
    assert m.video_ids == ["a", "b", "c"] and m.splits == ["train", "val", "test"]
    assert m.video_paths == ["clips/a.mp4", "clips/b c.mp4", "clips/c.mp4"]
    assert m.caption_video == [0, 0, 1, 2] and m.root == str(tmp_path) and m.dataset == "m"


def test_generic_jsonl_manifest_with_holdout(tmp_path):
    p = tmp_path / "m.jsonl"
    rows = [{"video_id": f"v{i}", "path": f"v{i}.mp4", "caption": f"clip {i}", "url": f"https://h/{i}",
             "start_time": i, "end_time": i + 5} for i in range(40)]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    m = read_manifest_file(p, root=tmp_path / "data", seed=3)
    assert m.splits.count("val") == 10 and m.splits.count("train") == 30  # the floor, not a tenth
    assert m.urls[7] == "https://h/7" and m.start_times[7] == 7.0 and m.end_times[7] == 12.0


@pytest.mark.parametrize("line,match", [
    ('{"video_id": "a", "path": "a.mp4"}', r"line 2: field 'caption' missing"),
    ('{"video_id": "a", "path": "a.mp4", "caption": "x"', r"line 2: malformed JSON"),
    ('{"video_id": "../a", "path": "a.mp4", "caption": "x"}', r"line 2: field 'video_id'.*rejected"),
    ('{"video_id": "a", "path": "../../etc/passwd", "caption": "x"}', r"line 2: field 'path'.*leaves the data root"),
    ('{"video_id": "a", "path": "-i.mp4", "caption": "x"}', r"line 2: field 'path'.*'-'"),
    ('{"video_id": "a", "path": "a.mp4", "caption": "x", "split": "dev"}', r"line 2: field 'split'"),
])
def test_generic_manifest_errors_name_line_and_field(tmp_path, line, match):
    p = tmp_path / "m.jsonl"
    p.write_text('{"video_id": "z", "path": "z.mp4", "caption": "ok"}\n' + line + "\n")
    with pytest.raises(AnnotationError, match=str(p).replace(".", r"\.") + ": " + match):
        read_manifest_file(p)


def test_generic_csv_extra_field_names_line(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("video_id,path,caption\na,a.mp4,fine\nb,b.mp4,too,many\n")
    with pytest.raises(AnnotationError, match=r"m.csv: line 3: 4 fields, header has 3"):
        read_manifest_file(p)


def test_manifest_is_written_through_storage(tmp_path):
    from storage import create_store, open_store
    m = read_msrvtt(_write_root(tmp_path / "r"))
    create_store(tmp_path / "s.zarr", **m.store_kwargs())
    ds = open_store(tmp_path / "s.zarr")
    assert list(ds["video"].values) == m.video_ids and list(ds["split"].values) == m.splits
    assert ds["caption_text"].values.tolist() == m.caption_text
    assert float(ds["start_time"].values[3]) == 4.5 and ds["url"].values[3].endswith("x3")


# --- D7: inconsistent annotations are reported, not merged silently ---------------------------
def _edit_json(root, fn):
    data = json.loads((root / "MSRVTT_data.json").read_text())
    fn(data)
    (root / "MSRVTT_data.json").write_text(json.dumps(data))


def test_consistent_annotations_give_no_warning(tmp_path):
    assert read_msrvtt(_write_root(tmp_path / "r")).warnings == []


def test_duplicate_video_entry_with_another_url_or_split(tmp_path):
    root = _write_root(tmp_path / "r")
    _edit_json(root, lambda d: d["videos"].extend([
        {**d["videos"][3], "url": "https://example.org/other"}, {**d["videos"][4], "split": "test"},
        dict(d["videos"][5])]))  # an identical repeat is harmless
    m = read_msrvtt(root)
    assert len(m.warnings) == 1
    assert "listed twice" in m.warnings[0] and "video3, video4" in m.warnings[0]
    assert "video5" not in m.warnings[0]
    assert m.urls[m.video_ids.index("video3")] == "https://www.youtube.com/watch?v=x3"  # the first wins
    with pytest.raises(AnnotationError, match=r"MSRVTT_data.json: .*listed twice.*video3, video4.*--strict"):
        read_msrvtt(root, strict=True)


def test_listed_video_without_captions(tmp_path):
    root = _write_root(tmp_path / "r")
    _edit_json(root, lambda d: d.update(sentences=[s for s in d["sentences"] if s["video_id"] != "video7"]))
    m = read_msrvtt(root)
    assert [w for w in m.warnings if "no caption" in w] == [f"{root}/MSRVTT_data.json: 1 listed video(s) "
                                                            "have no caption: video7"]
    with pytest.raises(AnnotationError, match="no caption: video7"):
        read_msrvtt(root, strict=True)


def test_captions_for_unknown_ids(tmp_path):
    root = _write_root(tmp_path / "r")
    _edit_json(root, lambda d: d["sentences"].extend(
        [{"video_id": "ghost1", "caption": "a"}, {"video_id": "ghost2", "caption": "b"}]))
    m = read_msrvtt(root)
    assert len(m.warnings) == 1 and "2 id(s) in no video list are dropped: ghost1, ghost2" in m.warnings[0]
    assert "ghost1" not in m.video_ids
    with pytest.raises(AnnotationError, match="ghost1, ghost2"):
        read_msrvtt(root, strict=True)


def test_7k_list_leaves_out_videos_without_a_warning(tmp_path):
    assert read_msrvtt(_write_root(tmp_path / "r"), train_list="7k").warnings == []
