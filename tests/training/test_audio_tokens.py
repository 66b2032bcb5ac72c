"""TrainConfig.audio_tokens: all tokens (special ones merged) or named poolings, and the
audio streamed from the store when it does not fit the RAM budget."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import training.data as data_mod
from storage import StoreLayout, layout_of, open_store
from storage.synthetic import create_synthetic_store, fill_random
from training.data import AudioTokens, StoreAudio, TrainLoader, load_arrays, select_split, split_nbytes
from training.heads import create_head
from training.planted import write_planted_store
from training.runs import ConfigError, TrainConfig, audio_for
from training.trainer import train

# a small AST-like layout: 2 special tokens, then 3 frequency x 5 time patches
GRID = dict(n_audio_tokens=17, audio_special_tokens=2, audio_freq_patches=3, audio_time_patches=5)
TINY = {"fusion_layers": 1, "resampler_layers": 1, "n_heads": 4}


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("audio") / "grid.zarr")
    create_synthetic_store(path, 40, 2, seed=2, val_fraction=0.2, test_fraction=0.2, dim=32,
                           audio_dim=16, n_words=8, **GRID)
    fill_random(path, ("frames", "audio", "text"), seed=4)
    return path


def legacy_pool_audio(tokens, n_out, layout):
    """training.data.pool_audio before audio_tokens had names (restated from git history)."""
    x = torch.from_numpy(np.ascontiguousarray(tokens)).float()
    n, t, d = x.shape
    if n_out <= 0 or t <= n_out:
        return tokens.astype(np.float16, copy=False)
    n_special, n_freq, n_time = (layout.audio_special_tokens, layout.audio_freq_patches,
                                 layout.audio_time_patches)
    if n_special >= 1 and t == n_special + n_freq * n_time and n_out >= 2:
        special = x[:, :n_special].mean(1, keepdim=True)
        grid = x[:, n_special:].reshape(n, n_freq, n_time, d).mean(1)
        timed = torch.nn.functional.adaptive_avg_pool1d(grid.transpose(1, 2), n_out - 1).transpose(1, 2)
        out = torch.cat([special, timed], dim=1)
    else:
        out = torch.nn.functional.adaptive_avg_pool1d(x.transpose(1, 2), n_out).transpose(1, 2)
    return out.numpy().astype(np.float16)


def test_pooled_names_give_the_arrays_of_the_old_integer_option():
    rng = np.random.default_rng(0)
    ast = StoreLayout(n_videos=1, n_captions=1)  # 2 + 12 x 101
    tokens = rng.standard_normal((3, 1214, 8)).astype(np.float16)
    for n in (2, 8, 32):
        assert np.array_equal(AudioTokens.parse(f"pool-time-{n}").apply(tokens, ast),
                              legacy_pool_audio(tokens, n, ast))
    flat = StoreLayout(n_videos=1, n_captions=1, n_audio_tokens=16, audio_dim=8)  # no grid
    tokens = rng.standard_normal((3, 16, 8)).astype(np.float16)
    for n in (4, 8, 16, 32):
        assert np.array_equal(AudioTokens.parse(f"pool-tokens-{n}").apply(tokens, flat),
                              legacy_pool_audio(tokens, n, flat))


def test_all_merges_the_special_tokens_and_keeps_every_patch():
    ast = StoreLayout(n_videos=1, n_captions=1)
    tokens = np.random.default_rng(1).standard_normal((2, 1214, 8)).astype(np.float16)
    out = AudioTokens.parse("all").apply(tokens, ast)
    assert out.shape == (2, 1213, 8) and out.dtype == np.float16
    want = ((tokens[:, 0].astype(np.float32) + tokens[:, 1].astype(np.float32)) / 2).astype(np.float16)
    assert np.array_equal(out[:, 0], want)
    assert np.array_equal(out[:, 1:], tokens[:, 2:])
    flat = StoreLayout(n_videos=1, n_captions=1, n_audio_tokens=16)  # no grid: as stored
    assert np.array_equal(AudioTokens.parse("all").apply(tokens[:, :16], flat), tokens[:, :16])


def test_all_feeds_exactly_the_stores_tokens_into_the_resampler(grid_store):
    audio = audio_for(("audio",), grid_store, "unused", "all", False)
    assert isinstance(audio, StoreAudio) and audio.shape == (40, 16, 16)  # 1 merged + 15 patches
    data = select_split(grid_store, "train")
    raw = np.asarray(open_store(grid_store)["audio_tokens"].values)[data.videos].astype(np.float32)
    expected = np.concatenate([raw[:, :2].mean(1, keepdims=True), raw[:, 2:]], 1)
    head = create_head("avigate", TINY, dim=32, audio_dim=16)
    seen = []
    head.audio_proj.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    fields = head.text_fields + head.video_fields
    batch = data_mod.to_batch(load_arrays(grid_store, data, fields, audio), None, np.arange(data.n_videos),
                              head.video_fields, torch.device("cpu"))
    head.encode_video(batch)
    assert seen[0].shape == (data.n_videos, 16, 16)
    np.testing.assert_allclose(seen[0].numpy(), expected, atol=1e-3)  # float16 rounding of the mean


def test_silent_videos_stay_masked_over_all_tokens(grid_store):
    data = select_split(grid_store, "train")
    audio = StoreAudio(grid_store)
    head = create_head("avigate", TINY, dim=32, audio_dim=16).eval()
    with torch.no_grad():  # open the gates so that audio would show if it got through
        for layer in head.fusion:
            layer.gate_mha.w2.weight.fill_(1.0)
            layer.gate_ffn.w2.weight.fill_(1.0)
    arrays = load_arrays(grid_store, data, head.video_fields, audio)
    batch = data_mod.to_batch(arrays, None, np.arange(data.n_videos), head.video_fields, torch.device("cpu"))
    silent = ~batch["has_audio"]
    assert silent.any() and (~silent).any()
    noisy = dict(batch, audio=batch["audio"] + torch.randn_like(batch["audio"].float()).half())
    with torch.no_grad():
        a, b = head.encode_video(batch)["frames"], head.encode_video(noisy)["frames"]
    assert torch.equal(a[silent], b[silent])
    assert not torch.allclose(a[~silent], b[~silent])


def test_bad_names_are_one_line_errors_listing_the_valid_ones(grid_store, tmp_path):
    for bad in ("32", "pool-32", "pool-time-1", "pool-tokens-0", "ALL"):
        with pytest.raises(ConfigError) as e:
            TrainConfig(audio_tokens=bad)
        msg = str(e.value)
        assert "\n" not in msg and repr(bad) in msg and "pool-time-N" in msg and "all" in msg
    planted = str(tmp_path / "p.zarr")
    write_planted_store(planted, 10, 2, splits=(6, 2, 2))  # 16 tokens, no special + grid layout
    with pytest.raises(ConfigError, match="16 audio tokens are not 2 special"):
        audio_for(("audio",), planted, str(tmp_path), "pool-time-8", False)
    with pytest.raises(ConfigError, match="only 5 time patches"):
        audio_for(("audio",), grid_store, str(tmp_path), "pool-time-8", False)
    # heads without audio ignore the option
    assert audio_for(("frames",), planted, str(tmp_path), "pool-time-8", False) is None
    res = train(planted, "meanpool", str(tmp_path / "m"), None,
                TrainConfig(epochs=1, batch_size=4, audio_tokens="pool-time-8", device="cpu"),
                progress=False, log=quiet)
    assert res["test"] is not None


def budget_that_streams_only_audio(store, data, fields, audio):
    rest = split_nbytes(store, data, tuple(f for f in fields if f != "audio"), None)
    return 2 * (rest + split_nbytes(store, data, ("audio",), audio) // 2)  # half of it is the budget


def test_audio_streams_when_it_does_not_fit_and_batches_stay_the_same(grid_store, monkeypatch):
    data = select_split(grid_store, "train")
    audio = StoreAudio(grid_store)
    head = create_head("avigate", TINY, dim=32, audio_dim=16)
    fields = head.text_fields + head.video_fields
    cpu = torch.device("cpu")
    memory = TrainLoader(grid_store, data, fields, 8, cpu, audio, stream="memory")
    monkeypatch.setattr(data_mod, "available_ram", lambda: budget_that_streams_only_audio(
        grid_store, data, fields, audio))
    streamed = TrainLoader(grid_store, data, fields, 8, cpu, audio)
    assert streamed.stream_audio and streamed.stream == "memory" and "audio" not in streamed._memory
    assert not memory.stream_audio and "audio" in memory._memory
    a, b = list(memory.epoch(0, 1)), list(streamed.epoch(0, 1))
    assert len(a) == len(b) > 1
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    monkeypatch.setattr(data_mod, "available_ram", lambda: 1024)  # nothing fits: shards too
    tiny = TrainLoader(grid_store, data, fields, 8, cpu, audio)
    assert tiny.stream_audio and tiny.stream == "dask"
    batch = next(iter(tiny.epoch(0, 0)))
    assert batch["audio"].shape[1:] == (16, 16) and batch["audio"].dtype == torch.float16


def test_streamed_and_in_memory_training_are_identical(grid_store, tmp_path, monkeypatch):
    cfg = dict(epochs=2, batch_size=8, lr=1e-3, seed=5, device="cpu")
    mem = train(grid_store, "avigate", str(tmp_path / "mem"), TINY, TrainConfig(stream="memory", **cfg),
                progress=False, log=quiet)
    data = select_split(grid_store, "train")
    fields = ("text", "frames", "frame_mask", "audio", "has_audio")
    monkeypatch.setattr(data_mod, "available_ram", lambda: budget_that_streams_only_audio(
        grid_store, data, fields, StoreAudio(grid_store)))
    made = []
    real = data_mod.TrainLoader.__init__

    def spy(self, *a, **kw):
        real(self, *a, **kw)
        made.append(self.stream_audio)
    monkeypatch.setattr(data_mod.TrainLoader, "__init__", spy)
    streamed = train(grid_store, "avigate", str(tmp_path / "str"), TINY, TrainConfig(**cfg),
                     progress=False, log=quiet)
    assert made == [True]
    assert mem["test"]["multi"] == streamed["test"]["multi"]
    w1, w2 = (load_file(str(tmp_path / r / "head.safetensors")) for r in ("mem", "str"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert layout_of(grid_store).n_audio_tokens == 17


def test_vtr_train_with_a_bad_name_prints_one_line(grid_store, tmp_path):
    import typer
    from typer.testing import CliRunner

    import vtr.commands.train
    app = typer.Typer(pretty_exceptions_enable=False)
    vtr.commands.train.register(app)
    r = CliRunner().invoke(app, ["train", "--store", grid_store, "--head", "avigate", "--out",
                                 str(tmp_path / "r"), "--audio-tokens", "pool-32", "--no-progress"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: audio_tokens 'pool-32' is not one of: all")
