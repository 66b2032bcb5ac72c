"""Bad input: one-line errors naming the file (and line and field); a listed video without
a file is no error at read time."""
import json
import os
import pickle
import re

import pytest

from extractors.annotations import AnnotationError
from extractors.datasets import get_dataset

EXPECTED_FILES = {
    "msvd": ["raw-captions.pkl", "train_list.txt", "val_list.txt", "test_list.txt"],
    "vatex": ["ref_captions.json", "train_list.txt", "test_list.txt"],
    "activitynet": ["train_ids.json", "train.json", "val_ids.json", "val_1.json"],
    "didemo": [f"{s}_{k}" for s in ("train", "val", "test") for k in ("list.txt", "data.json")],
    "lsmdc": ["LSMDC16_annos_training.csv", "LSMDC16_annos_val.csv", "LSMDC16_challenge_1000_publictect.csv"],
    "charades": ["Charades_v1_train.csv", "Charades_v1_test.csv"],
}


def _raises(root, name, pattern, **options) -> str:
    with pytest.raises(AnnotationError) as e:
        get_dataset(name).read(root, **options)
    msg = str(e.value)
    assert "\n" not in msg
    assert re.search(pattern, msg), msg
    return msg


@pytest.mark.parametrize("name,file", [(n, f) for n, files in EXPECTED_FILES.items() for f in files])
def test_missing_annotation_file_is_named(sample_copy, name, file):
    root = sample_copy(name)
    os.remove(root / file)
    msg = _raises(root, name, re.escape(f"{root}: no {file} "))
    assert msg == f"{root}: no {file} (the {get_dataset(name).title} annotation file expected there)"


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_missing_data_root(tmp_path, name):
    _raises(tmp_path / "nope", name, re.escape(f"{tmp_path / 'nope'}: data root does not exist"))


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_listed_video_without_a_file_is_kept(sample_copy, name):
    root = sample_copy(name)
    m0 = get_dataset(name).read(root)
    os.remove(root / m0.video_paths[2])
    m = get_dataset(name).read(root)
    assert m.video_ids == m0.video_ids and m.video_paths == m0.video_paths
    assert not (root / m.video_paths[2]).exists()


def _append(path, text):
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data, indent=1))


def _first_key(path):
    return next(iter(json.loads(path.read_text())))


# Files that cannot be read as the format (or ids that would leave the data root): the
# read stops with one line naming file and line.
MALFORMED = {
    "msvd list id": ("msvd", lambda r: _append(r / "train_list.txt", "\n../escape_1_2\n"),
                     r"train_list.txt: line 6: video id '\.\./escape_1_2' is not a plain name"),
    "msvd listed twice": ("msvd", lambda r: _append(r / "val_list.txt", (r / "val_list.txt").read_text()),
                          r"val_list.txt: line 3: video id '.+' already listed on line 1"),
    "msvd in two lists": ("msvd", lambda r: _append(r / "test_list.txt", (r / "train_list.txt").read_text()),
                          r"test_list.txt: video id '.+' is also listed in train_list.txt"),
    "msvd code in pickle": ("msvd", lambda r: (r / "raw-captions.pkl").write_bytes(pickle.dumps(os.getcwd)),
                            r"raw-captions.pkl: not a pickled dict of captions .*refusing to load"),
    "didemo not a list": ("didemo", lambda r: (r / "val_data.json").write_text('{"moments": []}'),
                          r"val_data.json: top level is not a list of moments$"),
    "vatex bad json": ("vatex", lambda r: _append(r / "ref_captions.json", "}"),
                       r"ref_captions.json: malformed JSON at line \d+"),
    "activitynet key": ("activitynet", lambda r: _edit_json(r / "val_ids.json", lambda d: d.append("AbCdEfGhIjK")),
                        r"val_ids.json: item \[3\] 'AbCdEfGhIjK' is not a key starting with 'v_'"),
    "charades cells": ("charades", lambda r: _append(r / "Charades_v1_test.csv", "ZZ99Z" + ",x" * 11 + "\n"),
                       r"Charades_v1_test.csv: line 4: 12 fields, header has 11"),
    "charades quote": ("charades", lambda r: _append(r / "Charades_v1_train.csv", 'ZZ99Z,S1,Hall,6,7,Yes,"open\n'),
                       r"Charades_v1_train.csv: line \d+: malformed CSV"),
}

# Per-item problems: the read goes on, with one warning per file naming the items.
ITEM_PROBLEMS = {
    "msvd no captions": ("msvd", lambda r: _append(r / "test_list.txt", "AbCdEfGhIjK_1_5\n"),
                         r"test_list.txt: 1 listed clip\(s\) have no captions in raw-captions.pkl \(left out\): "
                         r"AbCdEfGhIjK_1_5"),
    "msvd caption not words": ("msvd", lambda r: (r / "raw-captions.pkl").write_bytes(pickle.dumps(
        {**pickle.loads((r / "raw-captions.pkl").read_bytes()), "x_1_2": [["a"], "a b"]})),
        r"raw-captions.pkl: 1 caption\(s\) dropped: 'x_1_2'\[1\] \(not a list of words\)"),
    "vatex caption type": ("vatex", lambda r: _edit_json(
        r / "ref_captions.json", lambda d: d[(r / "test_list.txt").read_text().split()[0]].__setitem__(2, 7)),
        r"ref_captions.json: 1 caption\(s\) dropped: '.+'\[2\] \(7\)"),
    "activitynet sentences": ("activitynet", lambda r: _edit_json(
        r / "train.json", lambda d: d[_first_key(r / "train.json")].pop("sentences")),
        r": 1 listed id\(s\) have no usable annotation in train.json / val_1.json \(left out\): train_ids.json:v_"),
    "activitynet sentence": ("activitynet", lambda r: _edit_json(
        r / "val_1.json", lambda d: d[_first_key(r / "val_1.json")]["sentences"].append(None)),
        r": 1 listed id\(s\) have no usable annotation in train.json / val_1.json \(left out\): val_ids.json:v_"),
    "activitynet blank": ("activitynet", lambda r: _edit_json(
        r / "val_1.json", lambda d: d[_first_key(r / "val_1.json")].update(sentences=[" ", ""])),
        r": 1 listed id\(s\) have no usable annotation in train.json / val_1.json \(left out\): val_ids.json:v_"),
    "activitynet unannotated": ("activitynet", lambda r: _edit_json(r / "val_ids.json", lambda d: d.append("v_x")),
                                r": 1 listed id\(s\) have no usable annotation .* \(left out\): val_ids.json:v_x"),
    "didemo moment not an object": ("didemo", lambda r: _edit_json(r / "train_data.json", lambda d: d.insert(0, "x")),
                                    r"train_data.json: 1 moment\(s\) skipped: \[0\] not an object$"),
    "charades id twice": ("charades", lambda r: _append(r / "Charades_v1_train.csv", (r / "Charades_v1_train.csv")
                                                        .read_text().splitlines()[1] + "\n"),
                          r"Charades_v1_train.csv: 1 row\(s\) left out: line 8: field 'id': video '\w+' listed twice$"),
    "charades id": ("charades", lambda r: _append(r / "Charades_v1_test.csv", "..,S1,Hall,6,7,Yes,a script,,,,\n"),
                    r"Charades_v1_test.csv: 1 row\(s\) left out: line 4: field 'id': video id '\.\.' is not a "
                    r"plain name \(rejected\)$"),
    "didemo description": ("didemo", lambda r: _edit_json(r / "val_data.json", lambda d: d[1].pop("description")),
                           r"val_data.json: 1 moment\(s\) skipped: \[1\] field 'description': not a non-empty"),
    "didemo video id": ("didemo", lambda r: _edit_json(r / "test_data.json", lambda d: d[0].update(video="a/b.mov")),
                        r"test_data.json: 1 moment\(s\) skipped: \[0\] field 'video': video id 'a/b.mov' is not "
                        r"a plain name"),
    "lsmdc fields": ("lsmdc", lambda r: _append(r / "LSMDC16_annos_val.csv", "c_1\t1\t2\t1\t2\n"),
                     r"LSMDC16_annos_val.csv: 1 line\(s\) skipped: line 3: 5 tab-separated fields, expected 6"),
    "lsmdc sentence": ("lsmdc", lambda r: _append(r / "LSMDC16_annos_training.csv", "c_1\t1\t2\t1\t2\t \n"),
                       r"LSMDC16_annos_training.csv: 1 line\(s\) skipped: line 9: 5 tab-separated fields"),
    "lsmdc clip id": ("lsmdc", lambda r: _append(r / "LSMDC16_annos_training.csv", "..\t1\t2\t1\t2\tx\n"),
                      r"LSMDC16_annos_training.csv: 1 line\(s\) skipped: line 9: field 'clip id': video id '\.\.'"),
    "charades script": ("charades", lambda r: _append(r / "Charades_v1_test.csv", "ZZ99Z,S1,Hall,,,,,,,,\n"),
                        r"Charades_v1_test.csv: 1 row\(s\) left out: line 4: video 'ZZ99Z': field 'script' is empty"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_file_names_file_line_and_field(sample_copy, case):
    name, mutate, pattern = MALFORMED[case]
    root = sample_copy(name)
    mutate(root)
    _raises(root, name, re.escape(str(root)) + ".*" + pattern)


@pytest.mark.parametrize("case", ITEM_PROBLEMS)
def test_item_problem_is_one_warning_and_the_read_goes_on(sample_copy, case):
    name, mutate, pattern = ITEM_PROBLEMS[case]
    root = sample_copy(name)
    n0 = get_dataset(name).read(root).n_videos
    mutate(root)
    m = get_dataset(name).read(root)
    hits = [w for w in m.warnings if re.search(re.escape(str(root)) + ".*" + pattern, w)]
    assert len(hits) == 1 and len(m.warnings) == 1, m.warnings
    assert "\n" not in hits[0]
    assert m.n_videos >= n0 - 1


def test_two_files_for_one_id_warn_and_the_preferred_is_used(sample_copy):
    root = sample_copy("msvd")
    m = get_dataset("msvd").read(root)
    mp4 = root / "videos" / f"{m.video_ids[0]}.mp4"
    mp4.write_bytes(b"")
    m2 = get_dataset("msvd").read(root)
    assert m2.video_paths[0] == f"videos/{m.video_ids[0]}.mp4"
    assert m2.warnings == [f"{root / 'videos'}: 2 files for video {m.video_ids[0]!r} "
                           f"({m.video_paths[0]}, videos/{m.video_ids[0]}.mp4): using videos/{m.video_ids[0]}.mp4"]


@pytest.mark.parametrize("video_dir", ["..", "../videos", "/tmp"])
def test_video_dir_must_stay_inside_the_root(sample_root, video_dir):
    root = sample_root("lsmdc")
    _raises(root, "lsmdc", re.escape(f"{root}: video_dir {video_dir!r} leaves the data root"), video_dir=video_dir)


def test_a_bad_line_or_row_in_the_middle_skips_only_itself(sample_copy):
    """The read goes on after a skipped item: the rows after it are read as before."""
    for name, file, bad in (("lsmdc", "LSMDC16_annos_training.csv", "c_1\t1\t2\n\n   \n"),
                            ("charades", "Charades_v1_train.csv", None),
                            ("didemo", "train_data.json", None)):
        root = sample_copy(name)
        before = get_dataset(name).read(root)
        path = root / file
        if name == "lsmdc":
            path.write_text(bad + path.read_text())
        elif name == "charades":
            head, *rows = path.read_text().splitlines(keepends=True)
            path.write_text(head + "ZZ99Z,S1,Hall,,,,,,,,\n" + "".join(rows))
        else:
            _edit_json(path, lambda d: d.insert(0, {"video": "", "description": "x"}))
        after = get_dataset(name).read(root)
        assert len(after.warnings) == 1, (name, after.warnings)
        assert (after.video_ids, after.caption_text) == (before.video_ids, before.caption_text), name


def test_helpers_word_for_word(tmp_path):
    """The shared warning names five items and counts the rest; ActivityNet's key and
    paragraph files are refused naming the earlier listing and the top level."""
    import numpy as np

    from extractors.datasets import activitynet
    from extractors.datasets._common import count_warning
    from extractors.datasets._sample import youtube_like_ids

    six = [f"v{i}" for i in range(6)]
    assert count_warning(six, "ids have no file", "f.csv") == ["f.csv: 6 ids have no file: v0, v1, v2, v3, v4 (+1 more)"]
    assert count_warning(six[:5], "ids have no file", "f.csv") == ["f.csv: 5 ids have no file: v0, v1, v2, v3, v4"]
    keys = tmp_path / "ids.json"
    keys.write_text(json.dumps(["v_abc", "v_def", "v_abc"]))
    with pytest.raises(AnnotationError, match=re.escape(f"{keys}: item [2] 'v_abc' already listed as item [0]")):
        activitynet._read_keys(keys)
    paragraphs = tmp_path / "train.json"
    paragraphs.write_text("[]")
    with pytest.raises(AnnotationError, match=f"^{re.escape(str(paragraphs))}: top level is not an object keyed by video$"):
        activitynet._read_paragraphs(paragraphs, ["v_abc"])
    ids = youtube_like_ids(3, np.random.default_rng(0))
    assert ids[0].startswith("-") and "_" in ids[1] and all(len(i) == 11 for i in ids)


def test_sample_clips_name_their_scene_in_nested_folders(tmp_path):
    import numpy as np

    from extractors.datasets._sample import SCENES, make_clip, sample_folder

    out, rng = sample_folder(tmp_path / "a" / "b", 0)  # parents are created
    assert out.is_dir()
    clip = make_clip(out / "c.mp4", rng, audio=True, seconds=0.5)
    assert clip.scene in {scene for _, scene in SCENES} and clip.scene in clip.captions(1)[0]
    assert (out / "c.mp4").stat().st_size > 0


def test_msvd_reads_a_python2_pickle_of_utf8_bytes(tmp_path):
    """A pickle written by Python 2 holds byte strings; they are read as UTF-8."""
    from extractors.datasets import msvd

    path = tmp_path / "raw-captions.pkl"
    # protocol 2: {'vid': [['café']]} with SHORT_BINSTRING (Python 2's str)
    path.write_bytes(b"\x80\x02}U\x03vid]]U\x05caf\xc3\xa9aas.")
    captions, warnings = msvd._read_captions(path)
    assert captions == {"vid": ["café"]} and warnings == []
