import numpy as np
import pytest

from storage import DONE, FAILED, MISSING, StepWriter, StoreError, failures, open_store


def _frames(idx, dim=512):
    """Deterministic features: every value encodes its video index."""
    f = np.broadcast_to((idx % 97 + 1)[:, None, None] / 100.0, (idx.size, 12, dim)).astype(np.float32)
    return {"frame_features": f, "frame_mask": np.ones((idx.size, 12), bool)}


def test_pending_blocks_follow_chunks(small_store):
    w = StepWriter(small_store, "frames")
    blocks = list(w.pending_blocks())
    assert [b[0] for b in blocks] == [0, 256, 512]
    assert sum(b.size for b in blocks) == 600
    assert w.blocks()[-1] == range(512, 600)


def test_write_marks_done_and_resume_skips(small_store):
    w = StepWriter(small_store, "frames")
    idx = np.arange(256, 300)
    w.write(idx, _frames(idx))
    w2 = StepWriter(small_store, "frames")  # a re-opened writer
    pending = w2.pending()
    assert not np.isin(idx, pending).any() and pending.size == 600 - idx.size
    ds = open_store(small_store)
    np.testing.assert_allclose(ds.frame_features.values[idx, 0, 0], ((idx % 97 + 1) / 100.0), atol=1e-3)
    assert (ds.frames_state.values[idx] == DONE).all()


def test_failures_are_recorded_and_retried(small_store):
    w = StepWriter(small_store, "frames")
    idx = np.array([1, 2, 3])
    w.write(idx, _frames(idx), errors={2: "video2.mp4: moov atom not found"})
    s = w.states()
    assert s[1] == DONE and s[2] == FAILED and s[3] == DONE and s[4] == MISSING
    assert failures(small_store) == [{"step": "frames", "item": "video2", "index": 2,
                                      "error": "video2.mp4: moov atom not found"}]
    assert 2 in w.pending() and 2 not in w.pending(retry_failed=False)
    # a failed item's data stays at the fill value
    assert not open_store(small_store).frame_features.values[2].any()


def test_write_refuses_to_cross_a_block(small_store):
    w = StepWriter(small_store, "frames")
    idx = np.array([255, 256])
    with pytest.raises(ValueError, match="inside one block"):
        w.write(idx, _frames(idx))
    assert (w.states() == MISSING).all()


def test_write_validates_inputs(small_store):
    w = StepWriter(small_store, "frames")
    with pytest.raises(ValueError, match="strictly increasing"):
        w.write(np.array([3, 2]), _frames(np.array([3, 2])))
    with pytest.raises(KeyError, match="needs"):
        w.write(np.array([1]), {"frame_features": np.zeros((1, 12, 512))})
    with pytest.raises(KeyError, match="does not write"):
        w.write(np.array([1]), {**_frames(np.array([1])), "audio_tokens": np.zeros((1, 10, 8))})
    with pytest.raises(ValueError, match="shape"):
        w.write(np.array([1]), {"frame_features": np.zeros((1, 12, 7)), "frame_mask": np.ones((1, 12), bool)})
    with pytest.raises(StoreError, match="unknown step"):
        StepWriter(small_store, "bogus")
    assert (w.states() == MISSING).all()


def test_sparse_writes_inside_a_block(small_store):
    w = StepWriter(small_store, "text")
    idx = np.array([5, 9, 200])
    L = w.layout
    mask = np.zeros((3, L.n_words), bool)
    mask[:, :4] = True
    w.write(idx, {"caption_embedding": np.ones((3, L.dim)), "caption_tokens": np.ones((3, L.n_words, L.dim)) * mask[..., None],
                  "caption_mask": mask})
    ds = open_store(small_store)
    assert ds.caption_mask.values[[5, 9, 200]].sum() == 12 and ds.caption_mask.values.sum() == 12
    assert (np.flatnonzero(ds.text_state.values == DONE) == idx).all()


def test_load_variable_equals_zarr_for_raw_and_compressed_arrays(small_store):
    from storage import load_variable
    import zarr
    w = StepWriter(small_store, "frames")
    for block in list(w.pending_blocks())[:2]:  # the last block stays unwritten: fill value
        w.write(block, _frames(block))
    g = zarr.open_group(small_store, mode="r")
    for name in ("frame_features", "frame_mask", "frames_state", "caption_video", "audio_tokens"):
        np.testing.assert_array_equal(load_variable(small_store, name), np.asarray(g[name][:]), err_msg=name)
    assert load_variable(small_store, "frame_features")[555].sum() == 0
