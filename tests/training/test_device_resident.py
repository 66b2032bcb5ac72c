"""The train split held on the device (``training.device_data``), run on the CPU: the same
batches and the same head as the host loader; the fit check; mixed precision, compile
and divergence in the loop; ``--device cuda`` without a GPU."""
import csv

import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

import training.device_data as device_data
import training.trainer
import vtr.commands.train
from training.data import StoreAudio, TrainLoader, select_split
from training.device_data import ResidentSplit, held_nbytes, train_batches
from training.evaluate import amp_dtype
from training.heads import create_head
from training.planted import write_planted_store
from training.planted_waver import write_waver_store
from training.runs import ConfigError, DivergedError, TrainConfig
from training.trainer import train

from .conftest import TINY_AVIGATE

CPU = torch.device("cpu")
ALL_FIELDS = ("text", "text_tokens", "text_mask", "frames", "frame_mask", "audio", "has_audio", "tags", "tag_mask")


def quiet(m):
    pass


@pytest.fixture(scope="module")
def waver_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("resident") / "waver.zarr")
    write_waver_store(path, 40, 3, splits=(30, 5, 5), no_audio_fraction=0.2, no_tags_fraction=0.2, seed=4)
    return path


def test_resident_batches_are_the_host_loaders(waver_store):
    """Every field (floats held as float16, masks, tags, all audio tokens from the store),
    loaded in several shards, gives the host loader's batches exactly, epoch by epoch."""
    data = select_split(waver_store, "train")
    audio = StoreAudio(waver_store)
    host = TrainLoader(waver_store, data, ALL_FIELDS, 8, CPU, audio, stream="memory")
    held = ResidentSplit(waver_store, data, ALL_FIELDS, 8, CPU, audio, shard_videos=7)
    assert held.tensors["frames"].dtype == torch.float16 and held.tensors["audio"].dtype == torch.float16
    assert held.nbytes == held_nbytes(waver_store, data, ALL_FIELDS, audio)
    assert all(held.n_batches(5, e) == host.n_batches(5, e) for e in (0, 1))
    for epoch in (0, 1):
        a, b = list(host.epoch(5, epoch)), list(held.epoch(5, epoch))
        assert len(a) == len(b) > 1
        for x, y in zip(a, b):
            assert set(x) == set(y) == set(ALL_FIELDS)
            for f in ALL_FIELDS:
                assert x[f].dtype == y[f].dtype, f
                assert torch.equal(x[f], y[f]), f


def metrics_rows(run):
    with open(f"{run}/metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if k != "epoch_s"} for r in csv.DictReader(f)]


def test_resident_training_gives_the_host_loaders_head(split_code_store, tmp_path):
    store, _ = split_code_store
    cfg = dict(epochs=2, batch_size=32, lr=1e-3, audio_tokens="all", seed=3)
    seen = []
    for resident in ("off", "on"):
        train(store, "avigate", str(tmp_path / resident), TINY_AVIGATE, TrainConfig(**cfg, resident=resident),
              progress=False, log=seen.append)
    assert any(m.startswith("train split held on cpu:") for m in seen)
    off, on = metrics_rows(tmp_path / "off"), metrics_rows(tmp_path / "on")
    assert len(off) == len(on) == 2
    for a, b in zip(off, on):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-6), k
    wa, wb = load_file(tmp_path / "off" / "last.safetensors"), load_file(tmp_path / "on" / "last.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_the_fit_check(split_code_store, monkeypatch):
    store, _ = split_code_store
    data = select_split(store, "train")
    fields = ("text", "frames", "frame_mask")
    # auto holds nothing off CUDA
    assert isinstance(train_batches(store, data, fields, 8, CPU, resident="auto", log=quiet), TrainLoader)
    monkeypatch.setattr(device_data, "free_bytes", lambda device: 2 * held_nbytes(store, data, fields, None) - 2)
    with pytest.raises(ConfigError, match=r"resident=on: the train split takes 0\.\d+ GiB on cpu, over half"):
        train_batches(store, data, fields, 8, CPU, resident="on", log=quiet)
    # auto on a GPU too small for the split: the host loader feeds it (built without touching the GPU)
    notes = []
    loader = train_batches(store, data, fields, 8, torch.device("cuda"), resident="auto", log=notes.append)
    assert isinstance(loader, TrainLoader) and notes[0].startswith("note: the train split takes")
    assert notes[0].endswith("batches come from host memory")
    monkeypatch.setattr(device_data, "free_bytes", lambda device: 2 * held_nbytes(store, data, fields, None))
    # a stream chosen for the host loader keeps auto off the GPU, however much memory is free
    loader = train_batches(store, data, fields, 8, torch.device("cuda"), resident="auto", stream="memory", log=quiet)
    assert isinstance(loader, TrainLoader) and loader.stream == "memory"
    assert isinstance(train_batches(store, data, fields, 8, CPU, resident="on", log=quiet), ResidentSplit)


def test_config_checks():
    with pytest.raises(ConfigError, match="resident must be auto, on or off, not 'yes'"):
        TrainConfig(resident="yes")
    with pytest.raises(ConfigError, match="resident=on holds the whole split on the device; stream=dask"):
        TrainConfig(resident="on", stream="dask")


def test_amp_dtypes():
    cuda = torch.device("cuda")
    assert amp_dtype(CPU, True, training=True) is None and amp_dtype(cuda, False, training=True) is None
    assert amp_dtype(cuda, True) == torch.float16  # scoring keeps fp16's mantissa
    bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else False
    assert amp_dtype(cuda, True, training=True) == (torch.bfloat16 if bf16 else torch.float16)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("resident") / "small.zarr")
    write_planted_store(path, 24, 2, splits=(16, 4, 4), seed=5)
    return path


def test_compile_flag_reaches_torch_compile(small_store, tmp_path, monkeypatch):
    calls = []

    def fake_compile(fn):
        def run(batch):
            calls.append(len(batch["text"]))
            return fn(batch)
        calls.append(fn.__name__)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = dict(epochs=1, batch_size=8, resident="on")
    train(small_store, "meanpool", str(tmp_path / "plain"), None, TrainConfig(**cfg), progress=False, log=quiet)
    assert calls == []
    train(small_store, "meanpool", str(tmp_path / "compiled"), None, TrainConfig(**cfg, compile=True),
          progress=False, log=quiet)
    steps = int(metrics_rows(tmp_path / "compiled")[0]["step"])
    assert calls[0] == "forward_loss" and len(calls) == 1 + steps and steps >= 4  # every step ran compiled


@pytest.mark.parametrize("sync_steps", [2, 32])
def test_a_non_finite_loss_names_its_step(small_store, tmp_path, monkeypatch, sync_steps):
    """Read in the loop (every 2 steps) or at the end of the epoch (32)."""
    monkeypatch.setattr(training.trainer, "SYNC_STEPS", sync_steps)
    cls = type(create_head("meanpool", dim=64))
    original, n = cls.loss, []

    def loss(self, *a, **kw):
        n.append(1)
        out = original(self, *a, **kw)
        return out * float("nan") if len(n) == 3 else out

    monkeypatch.setattr(cls, "loss", loss)
    with pytest.raises(DivergedError, match=r"loss is nan at epoch 1, step 2$"):
        train(small_store, "meanpool", str(tmp_path / "nan"), None, TrainConfig(epochs=1, batch_size=8),
              progress=False, log=quiet)


def test_device_cuda_without_a_gpu_is_one_line(small_store, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    app = typer.Typer(pretty_exceptions_enable=False)
    vtr.commands.train.register(app)
    r = CliRunner().invoke(app, ["train", "--store", small_store, "--head", "meanpool", "--out", str(tmp_path / "r"),
                                 "--device", "cuda", "--no-progress"])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[-1] == "error: --device cuda asked for, but torch sees no CUDA device", r.output
    assert "Traceback" not in r.output and not (tmp_path / "r").exists()
    r = CliRunner().invoke(app, ["train", "--store", small_store, "--head", "meanpool", "--out", str(tmp_path / "s"),
                                 "--resident", "on", "--stream", "dask"])
    assert r.exit_code == 1 and "error: resident=on holds the whole split" in r.output, r.output


@pytest.mark.slow
def test_compiled_training_matches_eager(small_store, tmp_path):
    """A real torch.compile on the CPU (about 45 s to compile here): the same losses."""
    cfg = dict(epochs=2, batch_size=8, resident="on")
    train(small_store, "meanpool", str(tmp_path / "eager"), None, TrainConfig(**cfg), progress=False, log=quiet)
    train(small_store, "meanpool", str(tmp_path / "compiled"), None, TrainConfig(**cfg, compile=True),
          progress=False, log=quiet)
    eager, compiled = metrics_rows(tmp_path / "eager"), metrics_rows(tmp_path / "compiled")
    assert [r["step"] for r in eager] == [r["step"] for r in compiled] == [4.0, 8.0]
    for a, b in zip(eager, compiled):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-9)
        assert b["val_multi_t2v_R1"] == a["val_multi_t2v_R1"]
