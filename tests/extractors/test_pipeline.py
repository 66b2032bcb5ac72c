"""The extraction pipeline's CPU-testable GPU paths: a decode worker that dies costs only its
item, the fbank on the model's device equals the fbank in the workers, and packing through
the double buffers equals one batch per item."""
from __future__ import annotations

import os
import signal
import subprocess

import numpy as np
import pytest
import torch

from extractors.ast_encoder import create_ast_encoder
from extractors.workers import death_cause, ordered_map
from extractors.engine import FrameItems, Throughput, encode_audio, encode_frames

TINY_AST = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, device="cpu")


class FakeClip:
    """The engine's view of a CLIP encoder, cheap enough to run many batches on the CPU."""

    device = torch.device("cpu")
    image_size, dim, arch = 8, 6, "fake"

    class config:
        precision = "fp16"

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3].repeat(1, 2) * 2.0


def _frames(i: int) -> torch.Tensor:
    k = 1 + i % 4  # 1..4 valid frames: items straddle batch boundaries
    return torch.full((k, 8, 8, 3), 10 * i + 1, dtype=torch.uint8)


def _fake_item(self, i: int):
    """Stand-in for decoding: item 2 kills its worker outright, item 4 dies by SIGKILL."""
    if self.paths[i].endswith("exit.mp4"):
        os._exit(1)
    if self.paths[i].endswith("kill.mp4"):
        os.kill(os.getpid(), signal.SIGKILL)
    rows = _frames(i)
    mask = torch.zeros(self.n, dtype=torch.bool)
    mask[:rows.shape[0]] = True
    return i, rows, mask, None


@pytest.mark.parametrize("workers", [1, 2])
def test_a_dead_decode_worker_fails_its_item_and_the_run_goes_on(monkeypatch, workers):
    monkeypatch.setattr(FrameItems, "__getitem__", _fake_item)  # fork: the workers see it too
    paths = ["a.mp4", "b.mp4", "exit.mp4", "c.mp4", "kill.mp4", "d.mp4", "e.mp4"]
    stats = Throughput()
    res = list(encode_frames(FakeClip(), paths, batch_size=3, timeout_s=None, workers=workers, stats=stats))
    assert [r.index for r in res] == list(range(7))
    assert [r.ok for r in res] == [True, True, False, True, False, True, True]
    assert res[2].error == "exit.mp4: decode worker died (exit code 1)"
    assert res[4].error == "kill.mp4: decode worker died (killed by SIGKILL)"
    assert stats.items == 7 and stats.failed == 2
    for r in res:
        if r.ok:  # features of the items around the deaths are their own
            rows = _frames(r.index)
            x = (rows.float() / 255.0).movedim(-1, -3)
            assert r.data["frame_mask"].sum() == rows.shape[0]
            feats = r.data["frame_features"][r.data["frame_mask"]]
            assert feats.shape == (rows.shape[0], 6)
            mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
            std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
            want = FakeClip().encode_images((x - mean) / std).numpy()
            np.testing.assert_allclose(feats, want, rtol=1e-5)


def test_packing_through_the_double_buffers_equals_one_item_per_batch(monkeypatch):
    monkeypatch.setattr(FrameItems, "__getitem__", _fake_item)
    paths = [f"{i}.mp4" for i in range(9)]
    for batch in (1, 2, 5, 64):
        got = [r.data["frame_features"] for r in encode_frames(FakeClip(), paths, batch_size=batch,
                                                                 timeout_s=None, workers=0)]
        if batch == 1:
            want = got
        np.testing.assert_array_equal(np.stack(got), np.stack(want))


class Boom:
    def __len__(self):
        return 3

    def __getitem__(self, i):
        if i == 1:
            raise ValueError("bad item")
        return i * 10


def test_pool_reports_an_item_that_raises_and_names_the_signal():
    fail = lambda i, why: f"failed {i}: {why}"  # noqa: E731
    assert list(ordered_map(Boom(), 2, fail)) == [0, "failed 1: ValueError: bad item", 20]
    assert list(ordered_map(Boom(), 0, fail)) == [0, "failed 1: ValueError: bad item", 20]
    assert death_cause(-9) == "decode worker died (killed by SIGKILL)"
    assert death_cause(3) == "decode worker died (exit code 3)"


@pytest.fixture(scope="module")
def waves(tmp_path_factory):
    d = tmp_path_factory.mktemp("waves")
    out = {}
    for name, dur, freq in (("short", 2.5, 300), ("long", 11.0, 700)):  # long: cropped to 1024 frames
        out[name] = str(d / f"{name}.wav")
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={freq}:sample_rate=22050", "-t", str(dur), out[name]], check=True)
    return out


@pytest.mark.parametrize("shift", ["fixed-10ms", "fit-1024"])
def test_fbank_on_the_model_device_equals_the_fbank_in_the_workers(waves, shift):
    ast = create_ast_encoder(random_init=True, fbank_shift=shift, **TINY_AST)
    paths = [waves["short"], None, waves["long"], waves["short"] + ".missing"]
    in_workers = list(encode_audio(ast, paths, batch_size=2, workers=1, fbank_on_device=False))
    on_device = list(encode_audio(ast, paths, batch_size=2, workers=1, fbank_on_device=True))
    assert [r.ok for r in on_device] == [True, True, True, False] == [r.ok for r in in_workers]
    assert on_device[3].error == in_workers[3].error
    assert not on_device[1].data["has_audio"] and not on_device[1].data["audio_tokens"].any()
    for a, b in zip(on_device[:3], in_workers[:3]):
        np.testing.assert_allclose(a.data["audio_tokens"], b.data["audio_tokens"], rtol=1e-4, atol=1e-4)
        assert a.data["has_audio"] == b.data["has_audio"]
    assert on_device[0].data["audio_tokens"].std() > 0.1  # not two equal zeros
