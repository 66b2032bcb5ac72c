"""The AST is fed the fbanks its config names: an encoder built with ``fit-1024`` or the
release's mean/std (from the flows' config, or directly) gets exactly the fbanks
torchaudio's Kaldi computes on those settings, on the worker path and on the device path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.audio import load_audio
from extractors.ast_encoder import create_ast_encoder
from extractors.engine import encode_audio

TINY = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128, device="cpu")
AST_STATS = (-4.2677393, 4.5689974)
RELEASE_STATS = (-5.118, 3.2527153)


def kaldi_reference(wave: np.ndarray, shift_ms: float, mean: float, std: float) -> torch.Tensor:
    """AST's front end written out with torchaudio, the settings given as numbers."""
    import torchaudio
    w = torch.from_numpy(wave.astype(np.float32))[None]
    fb = torchaudio.compliance.kaldi.fbank(
        w - w.mean(), htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=shift_ms)
    fb = torch.nn.functional.pad(fb, (0, 0, 0, max(0, 1024 - fb.shape[0])))[:1024]
    return (fb - mean) / (2 * std)


def fed_fbanks(enc, path, on_device: bool) -> torch.Tensor:
    """What ``encode_audio`` hands the model for one file."""
    fed = []
    real = enc.encode
    enc.encode = lambda x: (fed.append(x.clone()), real(x))[1]
    try:
        [item] = list(encode_audio(enc, [path], batch_size=1, workers=0, fbank_on_device=on_device))
    finally:
        del enc.encode
    assert item.error is None and bool(item.data["has_audio"])
    return fed[-1][0]


def flows_encoder(shift: str):
    """The AST as `vtr extract --fbank-shift SHIFT` builds it."""
    from flows.config import ExtractConfig
    from flows.steps import ast_config
    from dataclasses import replace
    cfg = ast_config(ExtractConfig(random_init=True, ast_size="tiny", fbank_shift=shift, device="cpu").encoders())
    return create_ast_encoder(replace(cfg, num_hidden_layers=1))


@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("build,shift,stats", [
    ("flows", "fit-1024", AST_STATS),
    ("flows", "fixed-10ms", AST_STATS),
    ("config", "fit-1024", RELEASE_STATS),
])
def test_encoder_is_fed_the_fbanks_of_its_config(media, build, shift, stats, on_device):
    enc = flows_encoder(shift) if build == "flows" else create_ast_encoder(
        random_init=True, fbank_shift=shift, fbank_mean=stats[0], fbank_std=stats[1], **TINY)
    pre = enc.provenance()["preprocessing"]
    assert (pre["fbank_shift"], pre["fbank_mean"], pre["fbank_std"]) == (shift, *stats)
    wave = load_audio(media.speech, sr=16000)
    shift_ms = 1000.0 * wave.size / 16000 / 1024 if shift == "fit-1024" else 10.0
    ref = kaldi_reference(wave, shift_ms, *stats)
    got = fed_fbanks(enc, media.speech, on_device)
    assert got.shape == (1024, 128)
    assert (got - ref).abs().max().item() <= 1e-3
