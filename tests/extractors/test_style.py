"""The style step: deterministic rewrites and their CLIP features in the store."""
from __future__ import annotations

import numpy as np
import pytest

from extractors.clip_encoder import create_clip_encoder
from extractors.engine import encode_captions
from extractors.style import REWRITES, plan_rewrites, rewrite
from flows.config import ExtractConfig
from flows.steps import write_style, write_text
from storage import DONE, MISSING, StoreError, StoreLayout, as_str, check_store, create_store, open_group, open_store, \
    read_attrs, set_provenance, store_info


CFG = ExtractConfig(text_batch_size=8)


def test_rewrites_keep_the_words_and_change_the_writing():
    c = "A man is cooking pasta in a kitchen."
    assert rewrite(c, "footage", 0) == "footage of a man is cooking pasta in a kitchen"
    assert rewrite(c, "clip_where", 0) == "a clip where a man is cooking pasta in a kitchen"
    assert rewrite(c, "casing", 0) == c.upper()
    assert rewrite(c, "punctuation", 0) == "a man is cooking pasta in a kitchen"
    assert rewrite("a man is cooking", "punctuation", 0) == "A man is cooking."
    assert rewrite(c, "person", 0) == "someone is cooking pasta in a kitchen."
    assert rewrite("Someone talks to a woman", "person", 0) == "a person talks to someone"
    dropped = [rewrite(c, "word_drop", i) for i in range(20)]
    assert all(set(d.split()) <= set(c.split()) and d for d in dropped)
    assert len(set(dropped)) > 1  # depends on the caption index...
    assert dropped == [rewrite(c, "word_drop", i) for i in range(20)]  # ...and nothing else
    assert rewrite("two words", "word_drop", 3) == "two words"
    with pytest.raises(KeyError, match="unknown style"):
        rewrite(c, "poetry", 0)


def test_plan_rewrites_takes_each_test_videos_first_caption():
    text = [f"a man does thing {i}" for i in range(8)]
    cv = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    split = ["train", "test", "test", "val"]
    src, style, out = plan_rewrites(text, cv, split)
    assert src.tolist() == [2] * len(REWRITES) + [4] * len(REWRITES)
    assert style.tolist() == list(REWRITES) * 2
    assert out[0] == "footage of a man does thing 2"
    src, _, _ = plan_rewrites(text, cv, split, splits=("test", "val"), styles=("footage",), first_only=False)
    assert src.tolist() == [2, 3, 4, 5, 6, 7]


@pytest.fixture(scope="module")
def clip():
    return create_clip_encoder(random_init=True, device="cpu")


@pytest.fixture
def store(tmp_path, clip):
    path = str(tmp_path / "s.zarr")
    caps = ["A man is cooking pasta.", "a chef cooks", "a girl sings", "Someone sings a song",
            "a dog runs on grass", "a dog is running", "two men talk"]
    create_store(path, dataset="t", video_ids=["v0", "v1", "v2", "v3"], splits=["train", "test", "test", "val"],
                 caption_text=caps, caption_video=[0, 0, 1, 1, 2, 2, 3],
                 layout=StoreLayout(n_videos=4, n_captions=len(caps), n_frames=4))
    write_text(path, clip, CFG)
    return path


def test_style_step_writes_the_planned_rewrites_with_the_stores_clip(store, clip):
    assert write_style(store, clip, CFG) == {"rows": 2 * len(REWRITES), "done": 2 * len(REWRITES), "failed": 0}
    ds = open_store(store)
    assert ds.sizes["style_caption"] == 2 * len(REWRITES)
    src = ds["style_caption_source"].values
    assert src.tolist() == [2] * len(REWRITES) + [4] * len(REWRITES)  # first caption of each test video
    text = as_str(ds["style_caption_text"].values)
    assert text[0] == "footage of a girl sings" == rewrite("a girl sings", "footage", 2)
    ref = {r.index: r.data for r in encode_captions(clip, text.tolist(), batch_size=8)}
    for i in (0, len(REWRITES) + 3):
        np.testing.assert_allclose(ds["style_caption_embedding"].values[i], ref[i]["caption_embedding"], atol=2e-3)
        assert (ds["style_caption_mask"].values[i] == ref[i]["caption_mask"]).all()
    # "casing" is a control: CLIP lower-cases, so its features equal the source caption's
    casing = int(np.flatnonzero(as_str(ds["style_caption_style"].values) == "casing")[0])
    np.testing.assert_allclose(ds["style_caption_embedding"].values[casing],
                               ds["caption_embedding"].values[src[casing]], atol=2e-3)
    prov = read_attrs(store)["provenance"]["style"]
    assert prov["styles"] == list(REWRITES) and prov["model"] == read_attrs(store)["provenance"]["text"]["model"]
    assert store_info(store)["steps"]["style"] == {"done": 2 * len(REWRITES), "missing": 0, "failed": 0}
    assert check_store(store) == []
    # a re-run finds the same complete table and writes nothing; another plan is refused
    assert write_style(store, clip, CFG)["done"] == 0
    with pytest.raises(StoreError, match="already holds style captions"):
        write_style(store, clip, CFG, styles=("footage",))
    with pytest.raises(ValueError, match="unknown style 'poetry'"):
        write_style(store, clip, CFG, styles=("poetry",))


def test_rows_left_unfinished_by_a_crash_are_filled_again(store, clip):
    styles = ("footage", "person")
    write_style(store, clip, CFG, styles=styles)
    g = open_group(store, mode="r+")
    good = np.asarray(g["style_caption_embedding"][:])
    g["style_state"][:] = MISSING  # the crash came before the rows were marked done
    assert store_info(store)["steps"]["style"]["missing"] == 4 and check_store(store) == []
    assert write_style(store, clip, CFG, styles=styles)["done"] == 4
    np.testing.assert_array_equal(np.asarray(open_group(store)["style_caption_embedding"][:]), good)
    assert (np.asarray(open_group(store)["style_state"][:]) == DONE).all()
    # some rows done before the crash: only the others are encoded again, done ones kept
    g = open_group(store, mode="r+")
    g["style_state"][2:] = MISSING
    g["style_caption_embedding"][:2] = 0  # stand-in for "written before the crash"
    assert write_style(store, clip, CFG, styles=styles)["done"] == 2
    g = open_group(store)
    assert (np.asarray(g["style_caption_embedding"][:2]) == 0).all()
    # encoded in a smaller batch: equal up to CPU batch rounding
    np.testing.assert_allclose(np.asarray(g["style_caption_embedding"][2:]), good[2:], atol=2e-3)


def test_style_needs_the_text_steps_clip(tmp_path, store, clip):
    set_provenance(store, "text", {"model": "ViT-L-14", "weights_sha256": "f" * 64})
    with pytest.raises(StoreError, match="style needs the same CLIP"):
        write_style(store, clip, CFG)
    bare = str(tmp_path / "bare.zarr")
    create_store(bare, dataset="t", video_ids=["v0"], splits=["test"], caption_text=["a cat"], caption_video=[0],
                 layout=StoreLayout(n_videos=1, n_captions=1, n_frames=4))
    res = write_style(bare, clip, CFG)  # a warning recorded in the store, not a failure
    assert res["done"] == 0 and "vtr extract --steps text" in res["warning"]
    assert "vtr extract --steps text" in read_attrs(bare)["step_warnings"]["style"]
    assert "style_caption_source" not in open_group(bare)
