"""Inputs are part of the record: an edited URL, caption or split, a removed id and a
repaired video are each noticed on a re-run, and exactly their items are redone."""
import csv
import shutil

import numpy as np
import pytest

from extractors.annotations import read_msrvtt
from flows.config import ExtractConfig
from flows.extract import extract_dataset
from storage import DONE, FAILED, as_str, open_group

pytestmark = pytest.mark.slow
STEPS = ["probe", "crawl", "compress", "frames", "audio", "text"]
CONFIG = ExtractConfig(random_init=True, ast_size="tiny", crawl_retries=0, workers=1, steps=STEPS)


def write_manifest(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def manifest_rows(root):
    m = read_msrvtt(root, n_val=0)
    return [{"video_id": m.video_ids[v], "path": m.video_paths[v], "caption": c, "split": m.splits[v],
             "url": m.urls[v], "start_time": m.start_times[v], "end_time": m.end_times[v]}
            for c, v in zip(m.caption_text, m.caption_video)]


def run(manifest, root, store):
    return extract_dataset(manifest=str(manifest), data_root=str(root), store=str(store), dataset="edited",
                           config=CONFIG)


def done_counts(result):
    return {s: result["steps"][s]["done"] for s in STEPS}


def test_edited_url_caption_and_split_redo_exactly_those_items(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    rows = manifest_rows(root)
    manifest, store = tmp_path / "m.csv", tmp_path / "s.zarr"
    write_manifest(manifest, rows)
    run(manifest, root, store)
    g = open_group(store, mode="r")
    ids = as_str(g["video"][:]).tolist()
    audio_before = np.asarray(g["audio_tokens"][:]).copy()
    silent = [i for i, s in enumerate(as_str(g["audio_source"][:])) if s == "crawled"]
    assert len(silent) == 2
    a, b = silent  # a's URL now points at b's audio
    moved = next(i for i, s in enumerate(as_str(g["split"][:])) if s == "train" and i not in silent)
    new_url = next(r["url"] for r in rows if r["video_id"] == ids[b])
    for r in rows:
        if r["video_id"] == ids[a]:
            r["url"] = new_url
        if r["video_id"] == ids[moved]:
            r["split"] = "test"
    rows[0]["caption"] = "an edited caption"
    write_manifest(manifest, rows)

    result = run(manifest, root, store)
    assert done_counts(result) == {"probe": 0, "crawl": 1, "compress": 0, "frames": 0, "audio": 1, "text": 1}
    assert "1 URL(s) changed" in result["steps"]["crawl"]["changed"]
    assert "1 caption(s) edited" in result["steps"]["text"]["changed"]
    g = open_group(store, mode="r")
    assert as_str(g["url"][:])[a] == new_url and as_str(g["split"][:])[moved] == "test"
    assert as_str(g["caption_text"][:])[0] == "an edited caption"
    tokens = np.asarray(g["audio_tokens"][:])
    assert not np.array_equal(tokens[a], audio_before[a])  # the new URL's audio
    others = [i for i in range(len(ids)) if i != a]
    np.testing.assert_array_equal(tokens[others], audio_before[others])

    # an id no longer listed is marked removed, and nothing is redone for it
    gone = ids[moved]
    write_manifest(manifest, [r for r in rows if r["video_id"] != gone])
    result = run(manifest, root, store)
    assert all(n == 0 for n in done_counts(result).values()), result["steps"]
    assert as_str(open_group(store, mode="r")["split"][:])[moved] == "removed"


def test_a_video_repaired_after_a_failed_probe_gets_its_real_audio(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    manifest, store = tmp_path / "m.csv", tmp_path / "s.zarr"
    write_manifest(manifest, manifest_rows(root))
    run(manifest, root, store)
    g = open_group(store, mode="r")
    bad = as_str(g["video"][:]).tolist().index("video2")  # truncated by the fixture
    assert g["probe_state"][bad] == FAILED
    assert g["audio_state"][bad] != DONE, "a failed probe marked the audio done (as silent)"
    # the video is repaired: a whole file (another sample video, which has an audio track)
    good = as_str(g["audio_source"][:]).tolist().index("original")
    shutil.copyfile(root / "videos" / "all" / f"video{good}.mp4", root / "videos" / "all" / "video2.mp4")
    run(manifest, root, store)
    g = open_group(store, mode="r")
    assert g["probe_state"][bad] == DONE and g["audio_state"][bad] == DONE
    assert bool(g["has_audio"][bad]) and np.abs(np.asarray(g["audio_tokens"][bad])).sum() > 0
