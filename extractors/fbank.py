"""Kaldi-compatible log-mel filter banks for AST, without torchaudio at run time.

Follows Kaldi's ``compute-fbank-feats`` as ``torchaudio.compliance.kaldi.fbank`` implements
it with AST's arguments: 25 ms Hanning (non-periodic) frames, snip edges, DC removal,
pre-emphasis 0.97, 512-point power spectrum, HTK mel bins from 20 Hz to Nyquist, natural log
floored at float32 epsilon, no energy, no dither. Computed in float32 torch with the same
operations so results agree with torchaudio to rounding.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np

SHIFTS = ("fixed-10ms", "fit-1024")


@dataclass
class FbankConfig:
    """``fixed-10ms``: AST's frame shift (10 s = 1024 frames). ``fit-1024``: the AVIGATE
    release's shift of duration / 1024, so every clip spans ~1024 frames. ``mean``/``std``:
    AudioSet statistics (the AVIGATE release used -5.118 / 3.2527153)."""

    shift: str = "fixed-10ms"
    num_mel_bins: int = 128  # the AST's input (ASTConfig's num_mel_bins, max_length): held to it by
    target_frames: int = 1024  # tests/extractors/test_geometry.py; this module stays free of transformers
    mean: float = -4.2677393
    std: float = 4.5689974

    def __post_init__(self):
        if self.shift not in SHIFTS:
            raise ValueError(f"unknown fbank shift {self.shift!r} (choose from {', '.join(SHIFTS)})")
        if self.std <= 0:
            raise ValueError("std must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


_WINDOW_MS = 25.0
_PREEMPH = 0.97
_LOW_FREQ = 20.0


def _mel(f):
    return 1127.0 * (1.0 + f / 700.0).log()


def mel_banks(num_bins: int, padded_window: int, sr: float, device=None):
    """Triangular HTK-mel filters ``[num_bins, padded_window // 2 + 1]`` (last column zero),
    on ``device`` (default the CPU)."""
    import torch

    n_fft_bins = padded_window // 2
    nyquist = 0.5 * sr
    fft_bin_width = sr / padded_window
    mel_low = 1127.0 * math.log(1.0 + _LOW_FREQ / 700.0)
    mel_high = 1127.0 * math.log(1.0 + nyquist / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    mel = _mel(fft_bin_width * torch.arange(n_fft_bins)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return torch.nn.functional.pad(banks, (0, 1), value=0.0).to(device)


def kaldi_fbank(wave, sr: int = 16000, frame_shift_ms: float = 10.0, num_mel_bins: int = 128):
    """Raw log-mel frames ``[n_frames, num_mel_bins]`` (float32 tensor; 0 frames when the
    wave is shorter than one window), on the wave's device when it is a tensor."""
    import torch

    w = (wave.to(torch.float32) if isinstance(wave, torch.Tensor)
         else torch.as_tensor(np.asarray(wave, dtype=np.float32))).flatten()
    dev = w.device
    win = int(sr * _WINDOW_MS * 0.001)
    shift = int(sr * frame_shift_ms * 0.001)
    if shift < 1:
        raise ValueError(f"frame shift {frame_shift_ms} ms is below one sample at {sr} Hz")
    padded = 1 << (win - 1).bit_length()
    if w.numel() < win:
        return torch.empty(0, num_mel_bins, device=dev)
    m = 1 + (w.numel() - win) // shift
    frames = w.as_strided((m, win), (shift, 1))
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.nn.functional.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
    frames = frames - _PREEMPH * prev[:, :-1]
    window = torch.hann_window(win, periodic=False, dtype=torch.float32, device=dev)
    frames = torch.nn.functional.pad(frames * window.unsqueeze(0), (0, padded - win), value=0.0)
    power = torch.fft.rfft(frames).abs().pow(2.0)
    mel = power @ mel_banks(num_mel_bins, padded, sr, dev).T
    eps = torch.tensor(torch.finfo(torch.float32).eps, device=dev)
    return torch.max(mel, eps).log()


def frame_shift_ms(n_samples: int, sr: int, config: FbankConfig) -> float:
    if config.shift == "fixed-10ms":
        return 10.0
    # AVIGATE: stretch the clip over target_frames; at least one sample per shift
    return max(1000.0 * n_samples / sr / config.target_frames, 1000.0 / sr)


def fbank_tensor(wave, sr: int, config: FbankConfig):
    """``compute_fbank`` in torch, on the wave tensor's device: float32 ``[target_frames,
    num_mel_bins]``. The GPU front end runs this on the raw waves of a batch."""
    import torch

    w = wave.to(torch.float32).reshape(-1)
    w = w - w.mean() if w.numel() else w
    with torch.no_grad():
        fb = kaldi_fbank(w, sr, frame_shift_ms(w.numel(), sr, config), config.num_mel_bins)
    out = torch.zeros((config.target_frames, config.num_mel_bins), dtype=torch.float32, device=w.device)
    k = min(fb.shape[0], config.target_frames)
    out[:k] = fb[:k]
    return (out - config.mean) / (2.0 * config.std)


def compute_fbank(wave: np.ndarray, sr: int = 16000, config: FbankConfig | None = None) -> np.ndarray:
    """float32 ``[target_frames, num_mel_bins]``: mean-removed wave -> Kaldi fbank -> zero
    pad at the end / crop -> ``(x - mean) / (2 * std)`` (AST's normalisation)."""
    import torch

    w = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    return fbank_tensor(w, sr, config or FbankConfig()).numpy()


def load_fbank(path: str | os.PathLike, config: FbankConfig | None = None, sr: int = 16000) -> np.ndarray:
    from extractors.audio import load_audio

    return compute_fbank(load_audio(path, sr=sr), sr=sr, config=config)
