import numpy as np
import pytest

from storage import StoreLayout
from training.data import EmptySplitError, AudioTokens, distinct_video_batches, select_split
from training.planted import write_planted_store


def test_batches_never_repeat_a_video_and_cover_almost_all():
    rng = np.random.default_rng(0)
    cv = np.repeat(np.arange(50), rng.integers(1, 8, 50))
    batches = distinct_video_batches(cv, 16, rng)
    seen = np.concatenate(batches)
    assert len(set(seen.tolist())) == seen.size  # each caption at most once
    assert all(len(set(cv[b].tolist())) == b.size for b in batches)
    assert seen.size >= cv.size - 8  # only leftovers of one video may be dropped
    one, two = (distinct_video_batches(cv, 16, np.random.default_rng(5)) for _ in range(2))
    assert len(one) == len(two) and all((a == b).all() for a, b in zip(one, two))  # seeded


def test_pooled_audio_tokens_follow_the_layout():
    ast = StoreLayout(n_videos=1, n_captions=1)  # the defaults: the AST's 2 + 12 x 101 tokens
    n, d = 2, 4
    special = np.stack([np.full((n, d), 1.0), np.full((n, d), 3.0)], 1)
    # patches: value = time index, constant over frequency
    grid = np.broadcast_to(np.arange(101, dtype=np.float32)[None, None, :, None], (n, 12, 101, d))
    tokens = np.concatenate([special, grid.reshape(n, 1212, d)], 1).astype(np.float16)
    out = AudioTokens.parse("pool-time-5").apply(tokens, ast)
    assert out.shape == (n, 5, d) and out.dtype == np.float16
    assert np.allclose(out[:, 0], 2.0)  # mean of the two special tokens
    assert np.all(np.diff(out[0, 1:, 0].astype(np.float32)) > 0)  # time order kept
    assert AudioTokens.parse("pool-tokens-32").apply(tokens[:, :16], ast).shape == (n, 16, d)  # short layouts are kept
    assert AudioTokens.parse("pool-tokens-8").apply(np.ones((1, 64, d), np.float16), ast).shape == (1, 8, d)
    # the geometry comes from the layout: one special token and a 4 x 5 grid
    small = StoreLayout(n_videos=1, n_captions=1, n_audio_tokens=21, audio_special_tokens=1,
                        audio_freq_patches=4, audio_time_patches=5)
    grid = np.broadcast_to(np.arange(5, dtype=np.float32)[None, None, :, None], (n, 4, 5, d))
    tokens = np.concatenate([np.full((n, 1, d), 7.0), grid.reshape(n, 20, d)], 1).astype(np.float16)
    out = AudioTokens.parse("pool-time-6").apply(tokens, small)
    assert np.allclose(out[:, 0], 7.0) and np.allclose(out[0, 1:, 0], np.arange(5))
    assert not np.allclose(AudioTokens.parse("pool-tokens-6").apply(tokens, ast)[:, 0], 7.0)  # plain pooling


def test_empty_split_is_a_clear_error(tmp_path):
    path = str(tmp_path / "s.zarr")
    write_planted_store(path, 6, 2, splits=(4, 0, 2))
    assert select_split(path, "test").n_videos == 2
    with pytest.raises(EmptySplitError, match="split 'val' is empty"):
        select_split(path, "val")


def test_empty_split_counts_the_captions_whose_text_is_done(tmp_path):
    """`vtr train` on a store whose frames failed: the captions' text was done, and the
    message says so (it used to count only the captions of videos with frames done: 0)."""
    from typer.testing import CliRunner

    from storage.synthetic import create_synthetic_store, fill_random
    from vtr.cli import app
    path = str(tmp_path / "s.zarr")
    create_synthetic_store(path, 6, 2, splits=["train"] * 4 + ["test"] * 2)
    fill_random(path, ("text",))
    r = CliRunner().invoke(app, ["train", "--store", path, "--head", "meanpool", "--out", str(tmp_path / "run")])
    assert r.exit_code == 1
    assert ("split 'train' is empty (4 videos in it, 0 with frames done, 8 of its captions with text done"
            in r.output), r.output


def test_streamed_epochs_cover_the_split_like_memory(tmp_path):
    import torch

    from training.data import TrainLoader
    path = str(tmp_path / "s.zarr")
    write_planted_store(path, 300, 3, splits=(280, 10, 10))
    data = select_split(path, "train")
    fields = ("text", "frames", "frame_mask", "has_audio")
    seen = {}
    for stream in ("memory", "dask"):
        loader = TrainLoader(path, data, fields, 32, torch.device("cpu"), stream=stream, shard_videos=64)
        assert loader.stream == stream and len(loader.shards) == (1 if stream == "memory" else 5)
        assert np.array_equal(np.concatenate(loader.shards), np.arange(data.n_videos))  # a partition
        batches = list(loader.epoch(seed=0, epoch=0))
        assert all(b["frames"].dtype == torch.float32 and b["frames"].shape[1:] == (12, 64) for b in batches)
        texts = torch.cat([b["text"] for b in batches])
        assert data.n_captions - 10 <= texts.shape[0] <= data.n_captions
        seen[stream] = {tuple(r) for r in texts[:, :4].tolist()}
    assert len(seen["memory"] & seen["dask"]) >= data.n_captions - 20  # the same captions


def test_an_epoch_yields_the_batches_counted_more_than_captions_over_batch(tmp_path):
    """Distinct-video batches: captions whose video is already in the batch wait for a later
    one, so an epoch holds more than n_captions // batch_size batches. Every loader counts
    them exactly (the progress bar's total and the schedule's length), streamed and held alike."""
    import torch

    from training.data import TrainLoader
    from training.device_data import ResidentSplit
    path = str(tmp_path / "s.zarr")
    write_planted_store(path, 30, 10, splits=(24, 3, 3))  # few videos, many captions each
    data = select_split(path, "train")
    fields = ("text", "frames")
    cpu = torch.device("cpu")
    loaders = [TrainLoader(path, data, fields, 16, cpu, stream="memory"),
               TrainLoader(path, data, fields, 16, cpu, stream="dask", shard_videos=7),
               ResidentSplit(path, data, fields, 16, cpu, shard_videos=7)]
    for loader in loaders:
        for epoch in range(3):
            n = sum(1 for _ in loader.epoch(seed=5, epoch=epoch))
            assert loader.n_batches(5, epoch) == n
    assert loaders[0].n_batches(5, 0) > data.n_captions // 16


def test_train_progress_bar_total_is_the_epochs_batches(tmp_path, capfd):
    """The bar of `vtr train` counts to the steps the epoch really runs (metrics.csv's step)."""
    import csv
    import re

    from training.runs import TrainConfig
    from training.trainer import train
    path = str(tmp_path / "s.zarr")
    write_planted_store(path, 30, 10, splits=(24, 3, 3))
    train(path, "meanpool", str(tmp_path / "run"), {}, TrainConfig(epochs=1, batch_size=16, device="cpu"),
          progress=True, log=lambda m: None)
    totals = {int(t) for t in re.findall(r"epoch 1/1: +\d+%\|[^|]*\| \d+/(\d+)", capfd.readouterr().err)}
    with open(tmp_path / "run" / "metrics.csv") as f:
        steps = int(next(csv.DictReader(f))["step"])
    assert totals == {steps} and steps > 240 // 16


def test_no_phrase_table_says_what_the_tags_step_recorded(tmp_path):
    """A store whose tags step never ran is told to run it; one where it ran and found no
    phrase frequent enough is told what the step recorded (lower --tag-min-count), not to
    run it again."""
    from storage.store import set_step_warning

    from .conftest import train_cli
    path = str(tmp_path / "s.zarr")
    write_planted_store(path, 20, 2, splits=(14, 3, 3))
    args = ("train", "--store", path, "--head", "waver", "--no-progress", "--epochs", 1, "--init", "random")
    r = train_cli(*args, "--out", tmp_path / "run1")
    assert r.exit_code == 1 and r.output.endswith("no phrase table, so no tags (run `vtr extract --steps tags` "
                                                  "first)\n"), r.output
    why = "no phrase occurs in at least 5 of the 28 training captions (lower --tag-min-count)"
    set_step_warning(path, "tags", why)
    r = train_cli(*args, "--out", tmp_path / "run2")
    assert r.exit_code == 1
    assert r.output.splitlines()[-1] == f"error: {path}: no phrase table, so no tags (the tags step recorded: {why})"


def test_first_captions_are_the_lowest_store_rows():
    from training.data import SplitData
    # captions of videos 2, 0, 1, 0, 2, 1 (store order): the first of each video is its lowest row
    data = SplitData("test", np.arange(3), np.array([10, 11, 12, 13, 14, 15]), np.array([2, 0, 1, 0, 2, 1]))
    assert data.first_captions().tolist() == [1, 2, 0]


@pytest.fixture(scope="module")
def id_store(tmp_path_factory):
    """Every feature holds the id of its video (video v: value v + 1), so a batch shows
    whether its frames, audio and captions belong together."""
    from storage.synthetic import create_synthetic_store, write_step
    path = str(tmp_path_factory.mktemp("ids") / "s.zarr")
    n, per = 300, 3
    splits = np.random.default_rng(4).choice(["train", "train", "train", "test"], n)
    lay = create_synthetic_store(path, n, per, splits=splits, dim=8, n_frames=4, n_audio_tokens=6,
                                 audio_dim=4, n_words=4, video_chunk=32, caption_chunk=32)

    def code(v, shape):
        return np.broadcast_to((np.asarray(v, np.float32) + 1).reshape(-1, *[1] * len(shape)), (len(v), *shape))

    write_step(path, "frames", lambda idx: {"data": {
        "frame_features": code(idx, (lay.n_frames, lay.dim)), "frame_mask": np.ones((idx.size, lay.n_frames), bool)}})
    write_step(path, "audio", lambda idx: {"data": {
        "audio_tokens": code(idx, (lay.n_audio_tokens, lay.audio_dim)), "has_audio": np.ones(idx.size, bool)}})
    write_step(path, "text", lambda idx: {"data": {
        "caption_embedding": code(idx // per, (lay.dim,)), "caption_tokens": code(idx // per, (lay.n_words, lay.dim)),
        "caption_mask": np.ones((idx.size, lay.n_words), bool)}})
    return path


@pytest.mark.parametrize("stream", ["memory", "dask"])
def test_batch_frames_and_audio_belong_to_the_captions_video(id_store, stream):
    import torch

    from training.data import StoreAudio, TrainLoader
    data = select_split(id_store, "train")
    audio = StoreAudio(id_store)
    loader = TrainLoader(id_store, data, ("text", "frames", "frame_mask", "audio", "has_audio"), 16,
                         torch.device("cpu"), audio=audio, stream=stream, shard_videos=64)
    assert loader.stream_audio == (stream == "dask")  # audio read per batch beside the shards
    n_pairs = 0
    for b in loader.epoch(seed=0, epoch=1):
        vid = b["text"][:, 0]
        assert torch.equal(b["frames"][:, :, 0].amin(1), vid) and torch.equal(b["frames"][:, :, 0].amax(1), vid)
        assert torch.equal(b["audio"][:, :, 0].float().amin(1), vid)
        assert vid.unique().numel() == vid.numel()  # one caption per video in a batch
        n_pairs += vid.numel()
    assert n_pairs >= data.n_captions - 16
    # and the split's videos are the store's train videos
    assert np.isin(data.videos, np.flatnonzero(open_split_names(id_store) == "train")).all()


def open_split_names(store):
    from storage import open_store
    return np.array([str(s) for s in open_store(store)["split"].values])


def test_tag_arrays_gather_each_videos_phrases_and_mask_the_rest(tmp_path):
    """Row ``i`` of the tags is phrase ``tag_index[i]``'s embedding; slots holding -1 or an
    index past the table, and every slot of a video whose tags step is not done, are masked
    and zero."""
    from storage import StepWriter
    from storage.store import write_table
    from storage.synthetic import create_synthetic_store
    from training.data import tag_arrays

    path = str(tmp_path / "s.zarr")
    create_synthetic_store(path, n_videos=4, n_tags=3, dim=4, video_chunk=4)
    table = np.arange(1, 21, dtype=np.float16).reshape(5, 4)  # phrase p = [4p+1 .. 4p+4]
    write_table(path, "phrase", {"phrase_text": np.array([f"p{i}" for i in range(5)]),
                                 "phrase_count": np.full(5, 2, np.int32), "phrase_embedding": table},
                conflict="test")
    index = np.array([[4, 0, -1], [2, 5, 1], [3, 3, 3], [0, 1, 2]], np.int32)
    StepWriter(path, "tags").write(np.arange(4), data={"tag_index": index, "tag_score": np.ones((4, 3), np.float16)},
                                   errors={3: "frames step not done for this video"})
    tags, mask = tag_arrays(path, np.array([2, 0, 1, 3]))
    assert mask.tolist() == [[True] * 3, [True, True, False], [True, False, True], [False] * 3]
    assert tags.dtype == np.float32 and tags.shape == (4, 3, 4)
    want = np.zeros((4, 3, 4), np.float32)
    for r, v in enumerate([2, 0, 1, 3]):
        for k in range(3):
            if mask[r, k]:
                want[r, k] = table[index[v, k]]
    np.testing.assert_array_equal(tags, want)
    assert tags[1, 1].tolist() == [1, 2, 3, 4]  # phrase 0 is a phrase, not padding


def test_pooled_audio_is_computed_once_then_memory_mapped(tmp_path):
    from storage import layout_of, open_store
    from storage.synthetic import create_synthetic_store, fill_random
    from training.data import pooled_audio

    path = str(tmp_path / "s.zarr")
    create_synthetic_store(path, n_videos=5, n_audio_tokens=10, audio_dim=4, video_chunk=2)
    fill_random(path, ("audio",))
    cache = str(tmp_path / "a.npy")
    pooling = AudioTokens.parse("pool-tokens-2")
    first = pooled_audio(path, cache, pooling, progress=False)
    raw = open_store(path)["audio_tokens"].values.astype(np.float16)
    assert first.dtype == np.float16 and first.shape == (5, 2, 4)
    np.testing.assert_array_equal(first, pooling.apply(raw, layout_of(path)))
    again = pooled_audio(path, cache, pooling, progress=False)
    assert isinstance(again, np.memmap) and np.array_equal(again, first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "s.zarr"]  # no partial file left
    # pool-time needs the AST's grid of patches: ten tokens are not one, and nothing is written
    with pytest.raises(ValueError, match="the store's 10 audio tokens are not 2 special"):
        pooled_audio(path, str(tmp_path / "t.npy"), AudioTokens.parse("pool-time-4"), progress=False)
    assert not (tmp_path / "t.npy").exists()


def test_audio_token_options_name_themselves_and_fit_the_grid():
    for name in ("all", "pool-time-5", "pool-tokens-8"):
        assert str(AudioTokens.parse(name)) == name
    small = StoreLayout(n_videos=1, n_captions=1, n_audio_tokens=21, audio_special_tokens=1,
                        audio_freq_patches=4, audio_time_patches=5)
    AudioTokens.parse("pool-time-6").check(small)  # the special token and all five time patches
    with pytest.raises(ValueError, match=r"^audio_tokens pool-time-7: only 5 time patches "
                                         r"\(pool-time-N takes N <= 6\)$"):
        AudioTokens.parse("pool-time-7").check(small)
    few = np.ones((2, 16, 4), np.float32)  # fewer tokens than windows: kept, as float16
    out = AudioTokens.parse("pool-tokens-32").apply(few, small)
    assert out.dtype == np.float16 and out.shape == (2, 16, 4)


def test_store_audio_reads_any_index_order_and_zeroes_audio_not_done(tmp_path):
    from storage import StepWriter, layout_of, open_store
    from storage.synthetic import create_synthetic_store
    from training.data import StoreAudio

    path = str(tmp_path / "s.zarr")
    create_synthetic_store(path, n_videos=4, n_audio_tokens=10, audio_dim=4, video_chunk=4)
    tokens = (np.arange(4)[:, None, None] + 1 + np.zeros((4, 10, 4))).astype(np.float32)  # video v: v + 1
    StepWriter(path, "audio").write(np.arange(4), data={"audio_tokens": tokens, "has_audio": np.ones(4, bool)},
                                    errors={1: "no audio"})
    audio = StoreAudio(path)
    assert audio.shape == (4, 10, 4) and audio.dtype == np.float16
    got = audio[[3, 0, 3, 1]]
    assert got.dtype == np.float16 and got.shape == (4, 10, 4)
    assert got[:, 0, 0].tolist() == [4.0, 1.0, 4.0, 0.0]  # video 1's audio step failed: zeros
    assert np.array_equal(audio[np.array([0, 2])], got[[1]].repeat(2, 0) * np.array([1, 3])[:, None, None])
    assert audio[2].shape == (1, 10, 4) and audio[2][0, 0, 0] == 3.0


def test_loader_options_and_store_identity(tmp_path):
    import torch

    from storage import read_attrs
    from storage.store import set_annotation_record
    from training.data import TrainLoader, load_arrays, store_identity

    path = str(tmp_path / "s.zarr")
    write_planted_store(path, 12, 2, splits=(8, 2, 2))
    set_annotation_record(path, 2, [])
    ident = store_identity(path)
    assert ident["n_val"] == read_attrs(path)["n_val"] == 2 and ident["n_videos"] == 12 and ident["n_captions"] == 24
    assert AudioTokens.parse("pool-tokens-1").n == 1  # one window is a valid choice
    data = select_split(path, "train")
    arrays = load_arrays(path, data, ("text", "frames", "frame_mask"), None)
    assert arrays["frames"].dtype == np.float32 and arrays["text"].dtype == np.float32  # cast once, here
    with pytest.raises(ValueError, match="^stream must be auto, memory or dask, not 'disk'$"):
        TrainLoader(path, data, ("text",), 4, torch.device("cpu"), stream="disk")


def test_waiting_captions_fill_the_next_batches():
    """Two videos of eight captions, batches of two: every batch is one caption of each."""
    cv = np.repeat(np.arange(2), 8)
    for seed in range(5):
        batches = distinct_video_batches(cv, 2, np.random.default_rng(seed))
        assert len(batches) == 8 and all(sorted(cv[b].tolist()) == [0, 1] for b in batches)
