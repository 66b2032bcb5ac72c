"""Open-vocabulary tags: phrase mining on training captions only, ranking, the store step."""
from __future__ import annotations

import numpy as np
import pytest

from extractors.clip_encoder import create_clip_encoder
from extractors.tags import PHRASE_TEMPLATE, encode_phrases, is_verb_like, mean_frame_embedding, mine_phrases, \
    rank_tags
from flows.config import ExtractConfig
from flows.steps import write_tags
from storage import DONE, FAILED, StepWriter, StoreError, StoreLayout, create_store, open_store, read_attrs, \
    set_provenance


def test_verb_like_tokens():
    for w in ("playing", "plays", "cooks", "ran", "talking", "dances", "chopped", "running"):
        assert is_verb_like(w), w
    for w in ("thing", "building", "the", "man", "guitar", "something"):
        assert not is_verb_like(w), w


def test_mining_rules_and_order():
    caps = ["A man is playing a guitar.", "a woman playing a guitar on stage",
            "kids playing a guitar playing a guitar",  # counted once per caption
            "someone cooks pasta", "a chef cooks pasta in a pan", "the building is tall",
            "a man is playing the"]
    got = mine_phrases(caps, min_count=2)
    d = dict(got)
    assert d["playing a guitar"] == 3 and d["cooks pasta"] == 2
    assert all(c >= 2 for _, c in got)
    assert not any(p.split()[-1] in ("a", "the", "on", "in") for p in d)  # no function-word endings
    assert not any(p.startswith("building") for p in d)
    assert all(2 <= len(p.split()) <= 5 and is_verb_like(p.split()[0]) for p in d)
    assert got == sorted(got, key=lambda pc: (-pc[1], pc[0]))
    assert got == mine_phrases(list(reversed(caps)), min_count=2)  # deterministic
    assert mine_phrases(caps, min_count=2, max_phrases=1) == got[:1]
    assert all(len(p.split()) == 2 for p, _ in mine_phrases(caps, min_count=1, n_max=2))


def test_rank_tags_topk_padding_and_ties():
    phrases = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=np.float32)
    videos = np.array([[0, 2, 0], [1, 0.9, 0], [0, 0, 0]], dtype=np.float32)
    idx, score = rank_tags(videos, phrases, k=6)
    assert idx.shape == (3, 6) and idx.dtype == np.int32
    assert idx[0, 0] == 1 and score[0, 0] == pytest.approx(1.0)
    assert idx[1, 0] == 3 and list(idx[1, 1:4]) == [0, 1, 2]
    assert (idx[:, 4:] == -1).all() and (score[:, 4:] == 0).all()
    assert list(idx[2, :4]) == [0, 1, 2, 3]  # all ties: lower index first
    f = np.zeros((1, 3, 2), np.float32)
    f[0, 0], f[0, 1], f[0, 2] = [1, 0], [3, 2], [100, 100]
    np.testing.assert_allclose(mean_frame_embedding(f, np.array([[True, True, False]])), [[2, 1]])


@pytest.fixture(scope="module")
def clip():
    return create_clip_encoder(random_init=True, device="cpu")


TRAIN = ["a man is playing a guitar", "a boy playing a guitar loudly", "someone playing a guitar",
         "a chef is cooking some food", "people cooking some food outside", "cooking some food at home"]
TEST = ["a girl dancing on a stage"] * 5
VAL = ["dancing on a stage again"] * 3


@pytest.fixture
def store(tmp_path, clip):
    path = tmp_path / "t.zarr"
    caps = TRAIN + TEST + VAL
    cv = [0, 1, 2, 3, 4, 0] + [5] * 5 + [6] * 3
    create_store(path, dataset="t", video_ids=[f"v{i}" for i in range(7)],
                 splits=["train"] * 5 + ["test", "val"], caption_text=caps, caption_video=cv,
                 layout=StoreLayout(n_videos=7, n_captions=len(caps), n_frames=4, n_tags=3, video_chunk=4))
    phrase_emb = encode_phrases(clip, ["playing a guitar"], batch_size=8)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(7, 4, 512)).astype(np.float32)
    feats[0, :2] = phrase_emb[0]       # video 0 shows exactly what "playing a guitar" says
    mask = np.ones((7, 4), bool)
    mask[0, 2:] = False
    feats[0, 2:] = 0
    w = StepWriter(path, "frames")
    w.write(np.arange(4), data={"frame_features": feats[:4], "frame_mask": mask[:4]}, errors={1: "v1.mp4: broken"})
    w.write(np.arange(4, 7), data={"frame_features": feats[4:], "frame_mask": mask[4:]})
    set_provenance(path, "frames", clip.provenance())
    return path


def test_tags_step_uses_training_captions_only(store, clip):
    res = write_tags(store, clip, ExtractConfig(tag_min_count=3))
    ds = open_store(store)
    texts = [str(t) for t in ds["phrase_text"].values.tolist()]
    assert texts == ["cooking some food", "playing a guitar"]
    assert not any("dancing" in t for t in texts)  # test/val wording never enters
    assert res == {"phrases": 2, "done": 6, "failed": 1}
    assert ds["phrase_count"].values.tolist() == [3, 3] and (ds["phrase_state"].values == DONE).all()
    want = encode_phrases(clip, texts, batch_size=8)
    np.testing.assert_allclose(ds["phrase_embedding"].values.astype(np.float32), want, atol=2e-2, rtol=1e-2)
    assert ds["tags_state"].values.tolist() == [DONE, FAILED, DONE, DONE, DONE, DONE, DONE]
    assert ds["tags_error"].values[1] == "frames step not done for this video"
    assert ds["tag_index"].values[0, 0] == 1 and float(ds["tag_score"].values[0, 0]) == pytest.approx(1, abs=1e-3)
    assert (ds["tag_index"].values[0, 2] == -1) and ds["tag_index"].dtype == np.int32
    prov = read_attrs(store)["provenance"]["tags"]
    assert prov["mining"]["source"] == "train captions" and prov["mining"]["n_train_captions"] == len(TRAIN)
    assert prov["template"] == PHRASE_TEMPLATE
    # a rerun keeps the phrase table and only retries the failed video
    again = write_tags(store, clip, ExtractConfig(tag_min_count=3))
    assert again == {"phrases": 2, "done": 0, "failed": 1}
    with pytest.raises(StoreError, match="different phrase table"):
        write_tags(store, clip, ExtractConfig(tag_min_count=1))


def test_tags_refuse_nothing_mined_and_another_clip(store, clip):
    # too few captions for any phrase: a warning in the store and the result, not a failure
    res = write_tags(store, clip, ExtractConfig(tag_min_count=50))
    assert res["done"] == 0 and res["warning"].endswith("training captions (lower --tag-min-count)")
    assert read_attrs(store)["step_warnings"]["tags"] == res["warning"]
    set_provenance(store, "frames", dict(clip.provenance(), model="open_clip ViT-B-16"))
    with pytest.raises(StoreError, match="tags need the same CLIP"):
        write_tags(store, clip, ExtractConfig(tag_min_count=3))
