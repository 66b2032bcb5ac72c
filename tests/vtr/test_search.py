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
