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
    (9, 500, 1), (2, 500, 1), (1, 500, 0),  # two training videos: one validates
    (105, 500, 10), (60, 1, 1),  # a tenth rounds down; one video asked, one given
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
    assert m.root == str(tmp_path / "data")
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


# --- every refusal names the file and the cause, word for word -----------------------------
def _msrvtt_case(root, case):
    """Break a valid MSR-VTT root one way; returns the message read_msrvtt must give."""
    data = root / "MSRVTT_data.json"
    if case == "no root":
        import shutil
        shutil.rmtree(root)
        return f"{root}: data root does not exist"
    if case == "no json":
        data.unlink()
        return f"{root}: no MSRVTT_data.json (is this an MSR-VTT data root?)"
    if case == "not utf-8":
        data.write_bytes(b'{"videos": "\xff"}')
        return f"{data}: not UTF-8 text (invalid start byte)"
    if case == "top level":
        data.write_text("[]")
        return f"{data}: top level is not an object"
    if case == "videos":
        _edit_json(root, lambda d: d.update(videos={"video_id": "video0", "url": "https://example.org/watch"}))
        return f"{data}: field 'videos' is " + '{"video_id": "video0", "url": "https://e' + ", not a list of videos"
    if case == "video entry":
        _edit_json(root, lambda d: d["videos"].insert(1, ["video_id"]))
        return f"{data}: videos[1]: no field 'video_id'"
    if case in ("start time", "end time"):
        _edit_json(root, lambda d: d["videos"][2].update({case: "soon"}))
        return f"{data}: videos[2]: field '{case}' is not a number ('soon')"
    if case == "no captions":
        _edit_json(root, lambda d: d.pop("sentences"))
        return f"{data}: neither 'sentences' nor 'annotations' present"
    if case == "annotations":
        _edit_json(root, lambda d: d.pop("sentences") and d.update(annotations={"image_id": "video0", "caption": "a long caption"}))
        return f"{data}: field 'annotations' is " + '{"image_id": "video0", "caption": "a lon' + ", not a list"
    if case in ("no caption field", "no id field"):
        drop = "caption" if case == "no caption field" else "video_id"
        _edit_json(root, lambda d: d["sentences"][4].pop(drop))
        return f"{data}: sentences[4]: needs fields 'video_id' and 'caption'"
    if case == "unsafe id":
        _edit_json(root, lambda d: d.pop("sentences") and d.update(annotations=[{"image_id": "../x", "caption": "c"}]))
        return f"{data}: annotations[0]: field 'image_id': video id '../x' is not a plain name (rejected)"
    if case == "no train list":
        (root / "MSRVTT_train.9k.csv").unlink()
        return f"{root}: no MSRVTT_train.9k.csv"
    if case == "no test list":
        (root / "MSRVTT_JSFUSION_test.csv").unlink()
        return f"{root}: no MSRVTT_JSFUSION_test.csv"
    if case == "empty id":
        (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\n \n")
        return f"{root / 'MSRVTT_train.9k.csv'}: line 3: empty field 'video_id'"
    if case == "overlap":
        (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo26\nvideo27\n")
        return f"{root / 'MSRVTT_JSFUSION_test.csv'}: 2 test video(s) also in MSRVTT_train.9k.csv"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["no root", "no json", "not utf-8", "top level", "videos", "video entry",
                                  "start time", "end time", "no captions", "annotations", "no caption field",
                                  "no id field", "unsafe id", "no train list", "no test list", "empty id",
                                  "overlap"])
def test_msrvtt_refusals_word_for_word(tmp_path, case):
    root = _write_root(tmp_path / "r")
    want = _msrvtt_case(root, case)
    with pytest.raises(AnnotationError) as e:
        read_msrvtt(root)
    assert str(e.value) == want


def test_msrvtt_train_list_choice_and_strict_suffix(tmp_path):
    root = _write_root(tmp_path / "r")
    with pytest.raises(AnnotationError) as e:
        read_msrvtt(root, train_list="8k")
    assert str(e.value) == "train_list '8k': choose from 9k, 7k"
    _edit_json(root, lambda d: d.update(sentences=[s for s in d["sentences"] if s["video_id"] != "video7"]))
    with pytest.raises(AnnotationError) as e:
        read_msrvtt(root, strict=True)
    assert str(e.value) == f"{root}/MSRVTT_data.json: 1 listed video(s) have no caption: video7 (--strict)"


def test_msrvtt_fields_defaults_and_what_the_json_leaves_out(tmp_path):
    """A listed video the json does not describe gets no url and unknown (-1) times; a
    missing time is unknown; a missing split equals an empty one; the manifest records
    its dataset, root and validation size, and the default seed is 0."""
    root = _write_root(tmp_path / "r")

    def edit(d):
        del d["videos"][3]["start time"], d["videos"][3]["end time"]
        d["videos"] = [v for v in d["videos"] if v["video_id"] != "video4"]
        d["videos"].append({**d["videos"][0], "split": ""})  # the same entry, its split given empty
        for v in d["videos"][:1]:
            del v["split"]
        next(v for v in d["videos"] if v["video_id"] == "video5").pop("url")
    _edit_json(root, edit)
    m = read_msrvtt(root)
    assert m.warnings == []  # video4 is listed, so its captions are kept; the repeat agrees
    four, three = m.video_ids.index("video4"), m.video_ids.index("video3")
    assert (m.urls[four], m.start_times[four], m.end_times[four]) == ("", -1.0, -1.0)
    assert (m.start_times[three], m.end_times[three]) == (-1.0, -1.0)
    assert m.urls[m.video_ids.index("video5")] == ""  # a video entry without a url
    assert m.caption_video.count(four) == 3
    assert (m.dataset, m.root, m.n_val) == ("msrvtt", str(root), 500)
    assert read_msrvtt(root, n_val=20).n_val == 20
    assert read_msrvtt(root).splits == read_msrvtt(root, seed=0).splits != read_msrvtt(root, seed=1).splits


def test_msrvtt_without_a_videos_list_keeps_quiet_about_unlisted_captions(tmp_path):
    """No ``videos`` list (a caption-only json): captions of unlisted ids are not news."""
    root = _write_root(tmp_path / "r")
    _edit_json(root, lambda d: d.pop("videos") and d["sentences"].append({"video_id": "extra", "caption": "x"}))
    m = read_msrvtt(root)
    assert m.warnings == [] and "extra" not in m.video_ids and m.urls[0] == ""


@pytest.mark.parametrize("vid,ok", [("-..", False), ("--..x", False), ("XY..Z", True), ("X..", True), ("a" * 251, True),
                                    ("a" * 252, False), ("é" * 125 + "a", True), ("é" * 126, False)])
def test_video_id_edges(vid, ok):
    if ok:
        assert validate_video_id(vid, "w") == vid
    else:
        with pytest.raises(AnnotationError, match="is not a plain name"):
            validate_video_id(vid, "w")


def test_a_video_id_that_is_not_text_is_refused():
    with pytest.raises(AnnotationError) as e:
        validate_video_id(123, "m.json: videos[0]")
    assert str(e.value) == "m.json: videos[0]: video id 123 is not a plain name (rejected)"


def test_id_lists_stop_at_ten():
    from extractors.annotations import _id_list
    assert _id_list([f"v{i:02d}" for i in range(12)][::-1]) == \
        "v00, v01, v02, v03, v04, v05, v06, v07, v08, v09 (+2 more)"
    assert _id_list([f"v{i}" for i in range(10)]) == "v0, v1, v2, v3, v4, v5, v6, v7, v8, v9"


def test_manifest_fills_missing_columns_and_hands_every_field_to_the_store():
    from extractors.annotations import Manifest
    m = Manifest("d", "/data", ["a", "b"], ["train", "test"], ["a.mp4", "b.mp4"], ["x", "y"], [0, 1],
                 protocol="multi", max_seconds=30.0)
    assert (m.urls, m.start_times, m.end_times) == (["", ""], [-1.0, -1.0], [-1.0, -1.0])
    assert m.store_kwargs() == dict(dataset="d", video_ids=["a", "b"], splits=["train", "test"],
                                    caption_text=["x", "y"], caption_video=[0, 1], video_paths=["a.mp4", "b.mp4"],
                                    urls=["", ""], start_times=[-1.0, -1.0], end_times=[-1.0, -1.0],
                                    data_root="/data", protocol="multi", max_seconds=30.0)


def _manifest_case(tmp_path, case):
    p = tmp_path / "m.jsonl"
    ok = '{"video_id": "a", "path": "a.mp4", "caption": "x"}\n'
    if case == "missing":
        return p, f"{p}: no such manifest file"
    if case == "suffix":
        p = tmp_path / "m.txt"
        p.write_text(ok)
        return p, f"{p}: manifest must be .csv or .jsonl"
    if case == "empty":
        p.write_text("\n\n")
        return p, f"{p}: no rows"
    if case == "not utf-8":
        p.write_bytes(b'{"video_id": "\xff"}\n')
        return p, f"{p}: not UTF-8 text (invalid start byte)"
    if case == "not an object":
        p.write_text(ok + "[1, 2]\n")
        return p, f"{p}: line 2: not a JSON object"
    if case == "two paths":
        p.write_text(ok + '{"video_id": "a", "path": "b.mp4", "caption": "y"}\n')
        return p, f"{p}: line 2: field 'path': video 'a' already has path 'a.mp4'"
    if case == "two splits":
        p.write_text('{"video_id": "a", "path": "a.mp4", "caption": "x", "split": "train"}\n'
                     '{"video_id": "a", "path": "a.mp4", "caption": "y", "split": "Test"}\n')
        return p, f"{p}: line 2: field 'split': video 'a' is already 'train'"
    if case == "nul":
        p.write_text('{"video_id": "a", "path": "a\\u0000.mp4", "caption": "x"}\n')
        return p, f"{p}: line 1: field 'path' 'a\\x00.mp4' leaves the data root (rejected)"
    if case == "start":
        p.write_text('{"video_id": "a", "path": "a.mp4", "caption": "x", "start_time": "noon"}\n')
        return p, f"{p}: line 1: field 'start_time' is not a number ('noon')"
    if case == "end":
        p.write_text(ok + '{"video_id": "b", "path": "b.mp4", "caption": "x", "end_time": "late"}\n')
        return p, f"{p}: line 2: field 'end_time' is not a number ('late')"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "suffix", "empty", "not utf-8", "not an object", "two paths",
                                  "two splits", "nul", "start", "end"])
def test_generic_manifest_refusals_word_for_word(tmp_path, case):
    p, want = _manifest_case(tmp_path, case)
    with pytest.raises(AnnotationError) as e:
        read_manifest_file(p)
    assert str(e.value) == want


def test_generic_manifest_fields_and_defaults(tmp_path):
    """.ndjson is JSON Lines; blank lines are skipped, not an end; a video's first row gives
    its url and times (absent: "" and -1); a split repeated alike is fine; captions keep
    their inner line breaks; paths resolve against the file's folder; defaults: the
    release's 500 validation videos, seed 0."""
    p = tmp_path / "clips.ndjson"
    rows = [{"video_id": "a", "path": "a.mp4", "caption": "  one\r\ntwo  ", "split": "test"}, None,
            {"video_id": "a", "path": "a.mp4", "caption": "again", "split": "TEST", "url": "ignored"},
            {"video_id": "b", "path": "sub/b.mp4", "caption": "b", "url": "https://h/b", "start_time": 2,
             "end_time": 4.5}]
    rows += [{"video_id": f"t{i}", "path": f"t{i}.mp4", "caption": "t"} for i in range(30)]
    p.write_text("\n".join("" if r is None else json.dumps(r) for r in rows) + "\n")
    m = read_manifest_file(p)
    assert m.video_ids[:2] == ["a", "b"] and m.caption_text[:3] == ["one\r\ntwo", "again", "b"]
    assert m.splits[0] == "test" and m.dataset == "clips" and m.root == str(tmp_path) and m.n_val == 500
    assert (m.urls[0], m.start_times[0], m.end_times[0]) == ("", -1.0, -1.0)
    assert (m.urls[1], m.start_times[1], m.end_times[1]) == ("https://h/b", 2.0, 4.5)
    assert m.video_paths[1] == "sub/b.mp4" and m.caption_video[:3] == [0, 0, 1]
    assert m.splits == read_manifest_file(p, seed=0).splits != read_manifest_file(p, seed=1).splits
    assert read_manifest_file(p, n_val=3).n_val == 3
    # a CSV keeps a quoted caption's own line break as written
    c = tmp_path / "m.csv"
    c.write_bytes(b'video_id,path,caption\r\na,a.mp4,"one\r\ntwo"\r\n')
    assert read_manifest_file(c).caption_text == ["one\r\ntwo"]


def test_rows_that_name_val_get_no_extra_holdout(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("video_id,path,caption,split\n" + "".join(f"v{i},v{i}.mp4,c,train\n" for i in range(40))
                 + "w,w.mp4,c,val\n")
    m = read_manifest_file(p)
    assert m.splits.count("val") == 1 and m.splits[-1] == "val"


@pytest.mark.parametrize("body,cause", [
    (b"", "line 1: empty file (no header)"),
    (b"video_id,path,caption\na,a.mp4\n", "line 2: field 'caption' missing"),
    (b"video_id,path,caption\na,a.mp4,caf\xe9\n", "not UTF-8 text (invalid continuation byte)"),
])
def test_generic_csv_refusals_word_for_word(tmp_path, body, cause):
    p = tmp_path / "m.csv"
    p.write_bytes(body)
    with pytest.raises(AnnotationError) as e:
        read_manifest_file(p)
    assert str(e.value) == f"{p}: {cause}"
