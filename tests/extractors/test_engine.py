"""The batched engine on real (ffmpeg-made) files: order, failures, packing across batch
boundaries equal to one-by-one results, and writing into a real store block by block."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from extractors.ast_encoder import create_ast_encoder
from extractors.clip_encoder import create_clip_encoder
from extractors.engine import Throughput, create_encoder, encode_audio, encode_captions, encode_frames
from extractors.fbank import load_fbank
from extractors.frames import load_clip_frames, normalize_for_clip
from flows.config import ExtractConfig
from flows.steps import write_audio, write_frames, write_text
from storage import (DONE, FAILED, StepWriter, StoreError, StoreLayout, create_store, failures, open_store,
                     read_attrs, set_provenance, store_info)

CFG = ExtractConfig(workers=1)
TINY_AST = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, device="cpu")


def _video(path, dur: float, audio: bool, src: str = "testsrc2") -> str:
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", f"{src}=size=128x96:rate=5"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=500:sample_rate=16000"]
    cmd += ["-t", str(dur), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    cmd += ["-c:a", "aac", "-ac", "1"] if audio else ["-an"]
    subprocess.run([*cmd, str(path)], check=True)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine_media")
    (d / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 100)
    return {
        "dir": d,
        "short": _video(d / "short.mp4", 3.0, audio=False),           # 3 frames
        "long": _video(d / "long.mp4", 13.0, audio=True),             # 12 frames
        "mid": _video(d / "mid.mp4", 5.0, audio=True, src="mandelbrot"),  # 5 frames
        "broken": str(d / "broken.mp4"),
        "missing": str(d / "missing.mp4"),
    }


@pytest.fixture(scope="module")
def clip():
    return create_clip_encoder(random_init=True, device="cpu")


@pytest.fixture(scope="module")
def ast():
    return create_ast_encoder(random_init=True, **TINY_AST)


@pytest.mark.slow
def test_frames_in_order_failures_carry_on_and_packing_equals_one_by_one(files, clip):
    paths = [files[k] for k in ("short", "broken", "long", "missing", "mid")]
    stats = Throughput()
    # batch 7: the long video's 12 frames straddle batches
    packed = list(encode_frames(clip, paths, batch_size=7, timeout_s=60.0, workers=2, stats=stats))
    assert [r.index for r in packed] == [0, 1, 2, 3, 4]
    assert [r.ok for r in packed] == [True, False, True, False, True]
    assert packed[1].error.startswith(files["broken"]) and "\n" not in packed[1].error
    assert packed[3].error.startswith(files["missing"])
    assert packed[1].data is None
    assert stats.items == 5 and stats.failed == 2 and stats.rows == 3 + 12 + 5
    r = packed[0].data
    assert r["frame_features"].shape == (12, 512) and r["frame_mask"].sum() == 3
    assert not r["frame_features"][~r["frame_mask"]].any()           # padded slots are zero
    for i in (0, 2, 4):  # one video at a time, straight through the encoder
        frames, mask = load_clip_frames(paths[i])
        np.testing.assert_array_equal(packed[i].data["frame_mask"], mask)
        direct = clip.encode_images(normalize_for_clip(torch.from_numpy(frames[mask]))).numpy()
        np.testing.assert_allclose(packed[i].data["frame_features"][mask], direct, atol=1e-4, rtol=1e-4)


def test_audio_none_is_silence_failures_recorded_batched_equals_single(files, ast):
    paths = [files["long"], None, files["short"], files["mid"], files["missing"]]
    packed = list(encode_audio(ast, paths, batch_size=2, workers=2))
    assert [r.index for r in packed] == [0, 1, 2, 3, 4]
    assert [r.ok for r in packed] == [True, True, False, True, False]
    assert "no audio stream" in packed[2].error
    none = packed[1].data
    assert none["has_audio"] == np.False_ and not none["audio_tokens"].any()
    assert packed[0].data["audio_tokens"].shape == (1214, 64) and packed[0].data["has_audio"]
    single = list(encode_audio(ast, paths, batch_size=1, workers=0))
    for a, b in zip(packed, single):
        if a.ok:
            np.testing.assert_allclose(a.data["audio_tokens"], b.data["audio_tokens"], atol=1e-4, rtol=1e-4)
    fb = torch.from_numpy(load_fbank(files["mid"], ast.config.fbank_config()))[None]
    np.testing.assert_allclose(packed[3].data["audio_tokens"], ast.encode(fb)[0].numpy(), atol=1e-4, rtol=1e-4)


def test_captions_in_large_batches_equal_direct(clip):
    texts = ["a dog runs", "", "someone is playing a guitar on a stage", "x"]
    res = list(encode_captions(clip, texts, batch_size=3))
    assert [r.index for r in res] == [0, 1, 2, 3]
    direct = clip.encode_texts(texts)
    for r in res:
        np.testing.assert_allclose(r.data["caption_tokens"], direct["caption_tokens"][r.index].numpy(), atol=1e-4)
    assert res[1].data["caption_mask"].sum() == 2  # SOT + EOT


def test_factory_by_name():
    e = create_encoder("ast", random_init=True, **TINY_AST)
    assert e.n_tokens == 1214
    with pytest.raises(ValueError, match="unknown encoder"):
        create_encoder("wav2vec")


@pytest.fixture
def store(files, tmp_path):
    names = ["short", "broken", "long", "mid", "missing"]
    path = tmp_path / "s.zarr"
    caps = ["a test pattern", "noise", "a counter ticks", "a fractal zooms", "gone", "another test pattern"]
    create_store(path, dataset="t", video_ids=names, splits=["train", "train", "train", "test", "val"],
                 caption_text=caps, caption_video=[0, 1, 2, 3, 4, 0],
                 video_paths=[f"{n}.mp4" for n in names], data_root=str(files["dir"]),
                 layout=StoreLayout(n_videos=5, n_captions=6, audio_dim=64, video_chunk=2, caption_chunk=4))
    return path


@pytest.mark.slow
def test_write_frames_and_text_into_store(store, clip, files):
    res = write_frames(store, clip, ExtractConfig(frame_batch_size=8, workers=1))
    assert res == {"done": 3, "failed": 2}
    ds = open_store(store)
    assert ds["frames_state"].values.tolist() == [DONE, FAILED, DONE, DONE, FAILED]
    assert ds["frame_mask"].values.sum(1).tolist() == [3, 0, 12, 5, 0]
    assert ds["frame_features"].dtype == np.float16
    fails = {f["item"]: f["error"] for f in failures(store) if f["step"] == "frames"}
    assert set(fails) == {"broken", "missing"} and fails["missing"].startswith(files["missing"])
    prov = read_attrs(store)["provenance"]["frames"]
    assert prov["weights_sha256"] == "RANDOM-INIT"
    assert any("RANDOM-INIT" in w for w in store_info(store)["warnings"])
    # nothing pending any more unless failures are retried; done items are never rewritten
    before = ds["frame_features"].values.copy()
    assert write_frames(store, clip, CFG, retry_failed=False) == {"done": 0, "failed": 0}
    assert write_frames(store, clip, CFG) == {"done": 0, "failed": 2}
    np.testing.assert_array_equal(open_store(store)["frame_features"].values, before)

    assert write_text(store, clip, ExtractConfig(text_batch_size=4)) == {"done": 6, "failed": 0}
    ds = open_store(store)
    direct = clip.encode_texts(["a counter ticks"])
    np.testing.assert_allclose(ds["caption_embedding"].values[2].astype(np.float32),
                               direct["caption_embedding"][0].numpy(), atol=2e-2, rtol=1e-2)
    assert ds["caption_mask"].values[2].sum() == direct["caption_mask"][0].sum()


def test_write_audio_follows_the_crawl_step(store, ast, files):
    # the audio decision needs a probed video (a failed probe leaves audio undecided)
    probe = StepWriter(store, "probe")
    for block in ([0, 1], [2, 3], [4]):  # a write stays inside one block
        n = len(block)
        probe.write(np.array(block), data={"duration": np.full(n, 3, np.float32), "fps": np.full(n, 10, np.float32),
                                           "width": np.full(n, 96, np.int32), "height": np.full(n, 72, np.int32),
                                           "rotation": np.zeros(n, np.int16), "source_has_audio": np.zeros(n, bool)})
    crawl = StepWriter(store, "crawl")
    crawl.write(np.array([0, 1]), data={"audio_source": np.array(["none", "original"]),
                                        "audio_path": np.array(["", "broken.mp4"])})
    crawl.write(np.array([2, 3]), data={"audio_source": np.array(["original", "crawled"]),
                                        "audio_path": np.array(["long.mp4", files["mid"]])})
    res = write_audio(store, ast, ExtractConfig(audio_batch_size=2, workers=1))
    assert res == {"done": 3, "failed": 2}
    ds = open_store(store)
    assert ds["audio_state"].values.tolist() == [DONE, FAILED, DONE, DONE, FAILED]
    assert ds["has_audio"].values.tolist() == [False, False, True, True, False]
    assert not ds["audio_tokens"].values[0].any() and ds["audio_tokens"].values[2].any()
    err = {f["item"]: f["error"] for f in failures(store) if f["step"] == "audio"}
    assert "crawl step is not done" in err["missing"]
    assert read_attrs(store)["provenance"]["audio"]["preprocessing"]["fbank_mean"] == -4.2677393


def test_store_refuses_mixing_models_and_wrong_geometry(store, clip, ast):
    write_text(store, clip, CFG, indices=[0])
    rec = clip.provenance()
    set_provenance(store, "text", dict(rec, model="open_clip ViT-B-16", weights_sha256="ab" * 32))
    with pytest.raises(StoreError, match="mixing them is refused"):
        write_text(store, clip, CFG)
    big = create_ast_encoder(random_init=True, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, device="cpu")
    with pytest.raises(StoreError, match="1214 x 64 audio tokens"):
        write_audio(store, big, CFG)
