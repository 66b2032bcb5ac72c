"""Scoring a head: the blocked similarity matrix against one big product, the report's
labels and caption rows, the flat metric names and the selection score."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from storage.store import open_group
from training.data import AudioTokens, load_arrays, pooled_audio, select_split
from training.evaluate import (amp_dtype, autocast, cat_reprs, encode_videos, evaluate_split, flat_metrics,
                               selection_score, similarity_matrix)
from training.heads import create_head
from training.metrics import retrieval_report
from training.planted import write_planted_store

from .conftest import TINY_AVIGATE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A small store (2 captions a video) and an AVIGATE head, whose representations are
    dicts of tensors; the test split's arrays."""
    root = tmp_path_factory.mktemp("evaluate")
    store = str(root / "s.zarr")
    write_planted_store(store, 30, 2, splits=(10, 6, 14), noise=2.0, caption_noise=2.0, seed=3)
    torch.manual_seed(0)
    head = create_head("avigate", TINY_AVIGATE, dim=64, audio_dim=32)
    audio = pooled_audio(store, str(root / "a.npy"), AudioTokens.parse("pool-tokens-8"), progress=False)
    data = select_split(store, "test")
    arrays = load_arrays(store, data, head.text_fields + head.video_fields, audio)
    return store, head, audio, data, arrays


def _brute_force(head, arrays):
    """Every video and caption in one batch, one similarity call."""
    from training.data import to_batch
    n_v, n_c = arrays[head.video_fields[0]].shape[0], arrays[head.text_fields[0]].shape[0]
    with torch.no_grad():
        vid = head.encode_video(to_batch(arrays, None, np.arange(n_v), head.video_fields, CPU))
        txt = head.encode_text(to_batch(arrays, np.arange(n_c), None, head.text_fields, CPU))
        return head.similarity(txt, vid).numpy()


def test_blocks_and_batches_of_any_size_give_the_one_product(scored):
    _, head, _, _, arrays = scored
    head.train()  # scoring must switch dropout off itself
    whole = _brute_force(head.eval(), arrays)
    n_c, n_v = whole.shape
    assert (n_c, n_v) == (28, 14)
    head.train()
    for batch_size, block in ((3, 5), (256, 1024), (14, 14), (1, 28)):
        sim = similarity_matrix(head, arrays, CPU, batch_size=batch_size, block=block)
        assert not head.training
        assert sim.dtype == np.float32 and sim.shape == (n_c, n_v)
        np.testing.assert_allclose(sim, whole, rtol=1e-5, atol=1e-5, err_msg=f"{batch_size=} {block=}")
    vid = encode_videos(head, arrays, CPU, batch_size=4)
    assert isinstance(vid, dict) and all(v.shape[0] == n_v for v in vid.values())


def test_cat_reprs_joins_tensors_and_dicts_along_rows():
    a, b = torch.arange(6.).reshape(3, 2), torch.arange(6., 10.).reshape(2, 2)
    assert torch.equal(cat_reprs([a, b]), torch.arange(10.).reshape(5, 2))
    joined = cat_reprs([{"x": a, "m": a[:, 0]}, {"x": b, "m": b[:, 0]}])
    assert sorted(joined) == ["m", "x"]
    assert torch.equal(joined["x"], torch.arange(10.).reshape(5, 2)) and torch.equal(joined["m"], torch.arange(0., 10., 2))


def test_evaluate_split_scores_the_first_captions_under_the_store_protocol(scored, tmp_path):
    store, head, audio, data, arrays = scored
    report = evaluate_split(head, store, data, audio, CPU)
    sim = similarity_matrix(head, arrays, CPU)
    first = data.first_captions()
    assert report == {**retrieval_report(sim, arrays["caption_video"], first), "split": "test"}
    assert report["protocol"] == "single" and report["n_captions"] == 28 and report["n_videos"] == 14
    # another caption per video would give other single-caption numbers on this matrix
    other = retrieval_report(sim, arrays["caption_video"], first + 1)
    assert report["single"] != other["single"] and report["multi"] == other["multi"]
    g = open_group(store, mode="r+")
    g.attrs["protocol"] = "multi"
    try:
        import zarr
        zarr.consolidate_metadata(store)
        assert evaluate_split(head, store, data, audio, CPU)["protocol"] == "multi"
    finally:
        g.attrs["protocol"] = "single"
        zarr.consolidate_metadata(store)


def test_flat_metrics_and_the_selection_score():
    report = {p: {d: {"R1": 1.0 + 10 * i + 100 * j, "R5": 2.0, "R10": 3.0, "MdR": 4.0}
                  for j, d in enumerate(("t2v", "v2t"))} for i, p in enumerate(("single", "multi"))}
    flat = flat_metrics(report, "val_")
    assert flat["val_single_t2v_R1"] == 1.0 and flat["val_multi_t2v_R1"] == 11.0
    assert flat["val_single_v2t_R1"] == 101.0 and flat["val_multi_v2t_MdR"] == 4.0
    assert len(flat) == 16 and all(k.startswith("val_") for k in flat)
    assert selection_score(report) == 11.0 + 2.0 + 3.0  # multi-caption text->video R@1+R@5+R@10


def test_autocast_only_on_cuda_with_amp():
    cuda = torch.device("cuda")
    assert amp_dtype(CPU, True) is None and amp_dtype(cuda, False) is None
    assert amp_dtype(cuda, True) == torch.float16 and amp_dtype(cuda, True, training=False) == torch.float16
    for device, amp in ((CPU, True), (CPU, False), (cuda, False)):
        ctx = autocast(device, amp)
        assert not ctx._enabled and ctx.device == device.type
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="CUDA is not available"):
            ctx = autocast(cuda, True)  # torch itself turns it off here; on a GPU it is fp16
        assert ctx.fast_dtype == torch.float16 and ctx.device == "cuda"


@pytest.fixture(scope="module")
def finished_run(scored, tmp_path_factory):
    """One epoch of AVIGATE on the small store (its pooled audio cached in the run)."""
    from training.runs import TrainConfig
    from training.trainer import train
    store = scored[0]
    run = str(tmp_path_factory.mktemp("runs") / "run")
    train(store, "avigate", run, TINY_AVIGATE, TrainConfig(epochs=1, batch_size=8, audio_tokens="pool-tokens-8"),
          progress=False, log=lambda m: None)
    return store, run


def test_evaluating_a_run_reads_its_best_head_on_its_own_store(finished_run, tmp_path):
    from training.evaluate import evaluate_run, prepare_eval
    from training.runs import RunError, load_run
    store, run = finished_run
    rep = evaluate_run(store, run)  # the defaults: test split, the best head, the machine's device
    assert (rep["run"], rep["head"], rep["store"], rep["split"]) == (run, "avigate", store, "test")
    head, cfg, tc, audio, dev = prepare_eval(store, run)
    best, _ = load_run(run, "cpu", "head")
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), best.state_dict().values()))
    assert dev.type == "cpu" and cfg["head"] == "avigate" and tc.audio_tokens == "pool-tokens-8"
    assert audio is not None and audio.shape[0] == 30
    # another store: refused, naming the run
    other = str(tmp_path / "other.zarr")
    write_planted_store(other, 30, 2, splits=(10, 6, 14), seed=9)
    with pytest.raises(RunError, match=f"^{run} was trained on store "):
        evaluate_run(other, run, progress=False)


def test_training_takes_bf16_where_the_gpu_has_it_scoring_keeps_fp16(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(cuda, True, training=True) == torch.bfloat16
    assert amp_dtype(cuda, True) == amp_dtype(cuda, True, training=False) == torch.float16
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available" on a machine without one
        assert autocast(cuda, True, training=True).fast_dtype == torch.bfloat16
        assert autocast(cuda, True).fast_dtype == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(cuda, True, training=True) == torch.float16
    assert amp_dtype(CPU, True, training=True) is None and amp_dtype(cuda, False, training=True) is None


def test_prepare_eval_loads_the_head_it_is_asked_for(finished_run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from training.evaluate import prepare_eval
    store, run = finished_run
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    last = {k: torch.zeros_like(v) for k, v in load_file(f"{copy}/last.safetensors").items()}
    save_file(last, f"{copy}/last.safetensors")  # the last epoch made different weights
    head = prepare_eval(store, copy, "cpu", False, which="last")[0]
    assert all(float(v.abs().sum()) == 0 for v in head.state_dict().values() if v.is_floating_point())
    best = prepare_eval(store, copy, "cpu", False)[0]
    assert any(float(v.abs().sum()) > 0 for v in best.state_dict().values())
