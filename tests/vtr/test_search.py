"""`vtr search` / `vtr index` on the sample store: the query encoder equals the store's,
a copied training caption finds its video, the FAISS path agrees with exact scoring, and
bad input fails in one line."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from storage import DONE, as_str, open_store, read_attrs, set_provenance
from vtr.cli import app
from vtr.search import SearchError, Searcher, encode_query, text_encoder_for

runner = CliRunner()


def _captions(store):
    ds = open_store(store)
    text = as_str(ds["caption_text"].values)
    cv = ds["caption_video"].values.astype(int)
    split = as_str(ds["split"].values)
    ok = ds["text_state"].values == DONE
    return text, cv, split, ok, ds


def test_query_feature_equals_the_stored_caption(sample_store):
    text, _, _, ok, ds = _captions(sample_store)
    enc = text_encoder_for(sample_store)
    for i in np.flatnonzero(ok)[:3]:
        q = encode_query(enc, str(text[i]))
        stored = ds["caption_embedding"].values[i].astype(np.float32)
        # equal up to one float16 step: the store encoded the captions in batches, the query
        # alone, and CPU matmul kernels sum in another order for one row
        np.testing.assert_allclose(q["text"][0].numpy(), stored, rtol=2e-3, atol=1e-4)
        np.testing.assert_array_equal(q["text_mask"][0].numpy(), ds["caption_mask"].values[i])


def test_training_caption_ranks_its_video_first(sample_store, meanpool_run):
    """Among the training videos, a copied training caption finds its own video first, or
    one whose frames are the same to CLIP (the sample's random-init CLIP maps all
    game-of-life clips to one feature: no head can tell those apart)."""
    text, cv, split, ok, ds = _captions(sample_store)
    f = ds["frame_features"].values.astype(np.float32)
    f /= np.linalg.norm(f, axis=-1, keepdims=True).clip(1e-6)
    m = ds["frame_mask"].values[..., None]
    v = (f * m).sum(1) / m.sum(1)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    same = v @ v.T > 0.99
    owners: dict[str, set] = {}
    for i in np.flatnonzero(ok):
        owners.setdefault(str(text[i]), set()).add(int(cv[i]))
    unique = [i for i in np.flatnonzero(ok) if split[cv[i]] == "train" and len(owners[str(text[i])]) == 1]
    assert len(unique) >= 10
    train_videos = np.flatnonzero(split == "train")
    s = Searcher(sample_store, meanpool_run, checkpoint="last")
    exact = 0
    for i in unique:
        videos, scores = s.score(str(text[i]), train_videos)
        top = int(videos[np.argmax(scores)])
        assert same[cv[i], top], f"caption {text[i]!r} of video {cv[i]} found video {top} first"
        exact += top == cv[i]
    assert exact >= len(unique) // 3


def test_cli_search_index_and_json(sample_store, meanpool_run):
    text, cv, split, ok, _ = _captions(sample_store)
    q = str(text[np.flatnonzero(ok & (split[cv] == "train"))[0]])
    exact = runner.invoke(app, ["search", "--store", sample_store, "--run", meanpool_run, q, "-k", "4", "--json"])
    assert exact.exit_code == 0, exact.output
    res = json.loads(exact.output)["results"]
    assert [r["rank"] for r in res] == [1, 2, 3, 4]
    assert all(r["path"].endswith(".mp4") for r in res)
    assert res[0]["score"] >= res[-1]["score"]
    # an index is needed before --index works
    miss = runner.invoke(app, ["search", "--store", sample_store, "--run", meanpool_run, q, "--index"])
    assert miss.exit_code == 1 and "vtr index" in miss.output
    built = runner.invoke(app, ["index", "--store", sample_store, "--run", meanpool_run])
    assert built.exit_code == 0, built.output
    fast = runner.invoke(app, ["search", "--store", sample_store, "--run", meanpool_run, q, "-k", "4",
                               "--json", "--index"])
    assert fast.exit_code == 0, fast.output
    got = json.loads(fast.output)["results"]
    assert [r["id"] for r in got] == [r["id"] for r in res]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in res], rtol=1e-5)
    table = runner.invoke(app, ["search", "--store", sample_store, "--run", meanpool_run, q, "-k", "2"])
    assert table.exit_code == 0 and res[0]["id"] in table.output


def test_avigate_index_reranks(sample_store, avigate_run):
    s = Searcher(sample_store, avigate_run)
    from vtr.search import build_index
    path = build_index(sample_store, avigate_run, progress=False)
    q = "a still dark blue screen"
    exact = s.search(q, k=1)
    assert s.search(q, k=1, index=path)[0]["id"] == exact[0]["id"]  # k * 10 >= all videos here
    assert len(s.candidates(q, path, 3)) == 3
    head = os.path.join(avigate_run, "head.safetensors")
    st = os.stat(head)
    os.utime(head, (st.st_atime, st.st_mtime + 5))  # a retrained head makes the index stale
    try:
        with pytest.raises(SearchError, match="rebuild it"):
            s.search(q, k=1, index=path)
    finally:
        os.utime(head, (st.st_atime, st.st_mtime))


def test_waver_index_proposes_and_wti_reranks(sample_store, tmp_path):
    """WTI scores are no inner product: the index holds the token-weighted frame means and
    only proposes candidates; the scores returned are the head's exact ones."""
    from training.runs import TrainConfig
    from training.trainer import train
    from vtr.search import build_index
    run = str(tmp_path / "waver")
    train(sample_store, "waver", run, {"n_heads": 4, "temporal_layers": 1, "distill": "kd"},
          TrainConfig(epochs=1, batch_size=8), progress=False, log=lambda m: None)
    s = Searcher(sample_store, run)
    path = build_index(sample_store, run, progress=False)
    q = "a zoom into a glowing fractal"
    exact = s.search(q, k=3)
    fast = s.search(q, k=3, index=path)  # k * 10 candidates cover the whole sample
    assert [r["id"] for r in fast] == [r["id"] for r in exact]
    np.testing.assert_allclose([r["score"] for r in fast], [r["score"] for r in exact], rtol=1e-5)
    assert len(s.candidates(q, path, 2)) == 2


def test_empty_query(sample_store, meanpool_run):
    r = runner.invoke(app, ["search", "--store", sample_store, "--run", meanpool_run, "   "])
    assert r.exit_code == 1 and "empty query" in r.output


def test_run_from_another_store(tmp_path, meanpool_run):
    from storage.synthetic import create_synthetic_store
    other = str(tmp_path / "other.zarr")
    create_synthetic_store(other, 12, captions_per_video=5)
    r = runner.invoke(app, ["search", "--store", other, "--run", meanpool_run, "a cat"])
    assert r.exit_code == 1 and "was trained on store" in r.output
    with pytest.raises(SearchError, match="no provenance for the text features"):
        text_encoder_for(other)


def test_recorded_weights_missing_or_changed(tmp_path, sample_store):
    store = str(tmp_path / "copy.zarr")
    shutil.copytree(sample_store, store)
    rec = dict(read_attrs(store)["provenance"]["text"])
    rec.update(weights=str(tmp_path / "gone.pt"), weights_sha256="0" * 64)
    set_provenance(store, "text", rec)
    with pytest.raises(SearchError, match="gone.pt: the CLIP weights recorded"):
        text_encoder_for(store)
    (tmp_path / "gone.pt").write_bytes(b"not the weights")
    with pytest.raises(SearchError, match="sha256 mismatch"):
        text_encoder_for(store)


def test_index_on_more_videos_than_candidates(tmp_path, monkeypatch):
    """300 videos, k x 10 = 30 candidates: the index proposes a real subset. Some videos
    have failed frames, so index rows are not store indices; the candidates must be the
    videos whose index vectors score highest, and `--index` must return the exact results
    whenever the true video is among them."""
    import torch

    from storage import StepWriter, open_group
    from training.planted import write_planted_store
    from training.runs import TrainConfig
    from training.trainer import train
    from vtr import search as search_mod
    from vtr.search import build_index, searchable_videos

    store, run = str(tmp_path / "planted.zarr"), str(tmp_path / "meanpool")
    write_planted_store(store, 300, 2, splits=(240, 30, 30), noise=0.3)
    failed = np.array([0, 5, 6, 100, 299])
    w = StepWriter(store, "frames")
    for i in failed:  # one block at a time
        w.reset(np.array([i]))
        w.write(np.array([i]), errors={int(i): "frames: injected failure"})
    train(store, "meanpool", run, None, TrainConfig(epochs=2, batch_size=32, lr=1e-3), progress=False,
          log=lambda m: None)
    g = open_group(store, mode="r")
    caption_video = np.asarray(g["caption_video"][:])

    def stored_caption(_encoder, query):  # the query "17" is caption 17's stored features
        i = int(query)
        return {"text": torch.from_numpy(np.asarray(g["caption_embedding"][i:i + 1], np.float32)),
                "text_tokens": torch.from_numpy(np.asarray(g["caption_tokens"][i:i + 1], np.float32)),
                "text_mask": torch.from_numpy(np.asarray(g["caption_mask"][i:i + 1]))}
    monkeypatch.setattr(search_mod, "text_encoder_for", lambda store, device="cpu": None)
    monkeypatch.setattr(search_mod, "encode_query", stored_caption)

    s = Searcher(store, run)
    path = build_index(store, run, progress=False)
    videos = searchable_videos(store)
    assert videos.size == 295 and not np.isin(failed, videos).any()
    with torch.no_grad():
        vec = torch.nn.functional.normalize(s.head.index_vectors(s._video_repr(videos)).float(), dim=-1).numpy()
    k, hits = 3, 0
    for cap in np.flatnonzero(np.isin(caption_video, videos))[::10]:
        with torch.no_grad():
            q = search_mod._query_vector(s.text_repr(str(cap))).float().numpy()[0]
        want = np.sort(videos[np.argsort(-(vec @ (q / np.linalg.norm(q))), kind="stable")[:k * 10]])
        cands = s.candidates(str(cap), path, k * 10)
        assert cands.size == k * 10 < videos.size
        np.testing.assert_array_equal(cands, want)  # rows mapped to the right store indices
        fast = s.search(str(cap), k, index=path)
        if caption_video[cap] in cands:
            hits += 1
            exact = s.search(str(cap), k)
            assert [r["id"] for r in fast] == [r["id"] for r in exact], cap
            np.testing.assert_allclose([r["score"] for r in fast], [r["score"] for r in exact], rtol=1e-5)
    assert hits >= 20  # the trained head puts most true videos among its candidates
