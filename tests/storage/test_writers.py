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


def test_failures_of_every_step_name_their_item(small_store):
    """A step without failures does not end the listing; items of other dimensions than
    video are named by dimension and row."""
    from storage import write_style_table
    n = 3
    write_style_table(small_store, np.arange(n), ["formal"] * n, ["a", "b", "c"], np.zeros((n, 512)),
                      np.zeros((n, 32, 512)), np.ones((n, 32), bool))
    StepWriter(small_store, "text").write(np.array([3]), errors={3: "caption 3: too long"})
    StepWriter(small_store, "style").write(np.array([1]), errors={1: "style row 1: empty"})
    assert failures(small_store) == [
        {"step": "text", "item": "caption 3", "index": 3, "error": "caption 3: too long"},
        {"step": "style", "item": "style caption 1", "index": 1, "error": "style row 1: empty"}]


def test_pending_blocks_hold_failed_items_unless_told_and_a_single_item(small_store):
    w = StepWriter(small_store, "frames")
    for block in w.blocks():
        b = np.array(block)
        w.write(b, _frames(b), errors={int(b[0]): "bad"} if b[0] == 256 else None)
    assert [list(b) for b in w.pending_blocks()] == [[256]]
    assert list(w.pending_blocks(retry_failed=False)) == []


def test_the_pause_hook_reads_step_and_index(monkeypatch):
    from storage.writers import PAUSE_WRITE_ENV, _pause_point
    monkeypatch.delenv(PAUSE_WRITE_ENV, raising=False)
    assert _pause_point() is None
    monkeypatch.setenv(PAUSE_WRITE_ENV, "")
    assert _pause_point() is None
    monkeypatch.setenv(PAUSE_WRITE_ENV, "frames:7")
    assert _pause_point() == ("frames", 7)


def test_refusals_word_for_word(small_store):
    s = str(small_store)
    w = StepWriter(small_store, "frames")
    one = _frames(np.array([1]))
    cases = [
        (ValueError, lambda: w.write(np.array([3, 3]), _frames(np.array([3, 3]))), "indices must be strictly increasing"),
        (IndexError, lambda: w.write(np.array([600]), _frames(np.array([600]))), f"{s}: frames index out of range 0..599"),
        (IndexError, lambda: w.write(np.array([-1]), _frames(np.array([1]))), f"{s}: frames index out of range 0..599"),
        (ValueError, lambda: w.write(np.array([1, 2]), one), "frame_features: 1 rows for 2 indices"),
        (ValueError, lambda: w.write(np.array([1]), {"frame_features": np.zeros((1, 12, 7)), "frame_mask": one["frame_mask"]}),
         "frame_features: rows of shape (12, 7), store has (12, 512)"),
        (StoreError, lambda: StepWriter(small_store, "bogus"),
         f"{s}: unknown step 'bogus' (steps: probe, crawl, compress, frames, audio, text, tags, style)"),
        (StoreError, lambda: StepWriter(small_store, "style"), f"{s}: the style step has not planned its style_caption rows yet"),
    ]
    for exc, call, message in cases:
        with pytest.raises(exc) as e:
            call()
        assert str(e.value).strip("'\"") == message
    w.write(np.array([599]), _frames(np.array([599])))  # the last item is in range
    assert w.states()[599] == DONE and (w.path, w.item_dim) == (s, "video")


def test_failed_items_keep_their_cause_and_done_ones_an_empty_error(small_store):
    w = StepWriter(small_store, "frames")
    idx = np.array([4, 6, 7])
    w.write(idx, _frames(idx), errors={6: "video6.mp4: truncated"})
    ds = open_store(small_store)
    assert ds.frames_error.values[[4, 6, 7]].tolist() == ["", "video6.mp4: truncated", ""]
    assert ds.frames_state.values.dtype == np.uint8 and ds.frames_error.values.dtype.kind in "UOT"
    assert (ds.frame_features.values[6] == 0).all() and ds.frame_features.values[7, 0, 0] > 0


def test_removed_videos_and_their_captions_are_never_pending(small_store):
    """A video the annotations no longer list (split "removed") is not redone by any step,
    nor are its captions; the others stay pending."""
    import zarr
    g = zarr.open_group(str(small_store), mode="r+")
    split = np.array([str(x) for x in np.asarray(g["split"][:])], dtype=object)
    split[[3, 300]] = "removed"
    g["split"][:] = split
    cap_video = np.asarray(g["caption_video"][:])
    frames, text = StepWriter(small_store, "frames"), StepWriter(small_store, "text")
    assert set(frames.pending()) == set(range(600)) - {3, 300}
    gone = np.flatnonzero(np.isin(cap_video, [3, 300]))
    assert gone.size == 6 and set(text.pending()) == set(range(1800)) - set(gone.tolist())
    w = StepWriter(small_store, "frames")
    b = np.arange(0, 256)
    w.write(b, _frames(b), errors={5: "bad"})
    assert 5 in w.pending() and 5 not in w.pending(retry_failed=False) and 3 not in w.pending()


def test_silent_videos_leave_no_audio_chunk_behind(small_store):
    """An all-zero audio row (a silent video) is not written: its chunk stays absent."""
    import os
    w = StepWriter(small_store, "audio")
    L = w.layout
    idx = np.array([0, 1])
    tokens = np.zeros((2, L.n_audio_tokens, L.audio_dim), np.float16)
    tokens[1] = 1.0
    data = {name: np.zeros((2,) + tuple(open_store(small_store)[name].shape[1:]), dtype=np.float16 if name == "audio_tokens" else bool)
            for name in w.variables}
    data["audio_tokens"] = tokens
    w.write(idx, data)
    chunks = sorted(os.listdir(os.path.join(small_store, "audio_tokens", "c")))
    assert chunks == ["1"]
