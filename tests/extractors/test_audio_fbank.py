import numpy as np
import pytest
import torch

from extractors.audio import load_audio
from extractors.errors import MediaError
from extractors.fbank import FbankConfig, compute_fbank, frame_shift_ms, load_fbank


def test_load_audio_from_video_and_wavs(media):
    w = load_audio(media.cfr)
    assert w.dtype == np.float32 and w.ndim == 1 and np.abs(w).max() <= 1.0
    assert len(w) == pytest.approx(4.2 * 16000, rel=0.02)
    # the 440 Hz tone survives decoding and resampling
    spec = np.abs(np.fft.rfft(w[:16000]))
    assert abs(np.argmax(spec) - 440) <= 1
    assert len(load_audio(media.noise)) == pytest.approx(2.5 * 16000, rel=0.01)
    assert len(load_audio(media.tone, start=1.0, end=2.5)) == pytest.approx(1.5 * 16000, rel=0.01)
    assert len(load_audio(media.speech, sr=8000)) == pytest.approx(probe_s(media.speech) * 8000, rel=0.01)


def test_load_audio_reads_a_16k_mono_wav_without_ffmpeg(media, tmp_path, monkeypatch):
    """The crawl step's WAVs (16 kHz mono s16) are read directly: the same samples as
    ffmpeg's decode, with no ffmpeg or ffprobe on the PATH; other WAVs still go to ffmpeg."""
    import shutil

    via_ffmpeg = tmp_path / "tone.bin"  # not named .wav: ffprobe/ffmpeg decode it
    shutil.copy(media.tone, via_ffmpeg)
    expected = load_audio(via_ffmpeg)
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg, no ffprobe
    got = load_audio(media.tone)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    with pytest.raises(FileNotFoundError):  # 44.1 kHz: not for the direct read
        load_audio(media.noise)


def probe_s(path):
    from extractors.probe import probe
    return probe(path).duration


@pytest.mark.parametrize("name", ["noaudio", "zero", "text"])
def test_load_audio_errors(media, name):
    path = getattr(media, name)
    with pytest.raises(MediaError) as e:
        load_audio(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    if name == "noaudio":
        assert "no audio stream" in str(e.value)


def _reference(wave: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """AST's front end with torchaudio's Kaldi fbank (the reference, test-time only)."""
    import torchaudio
    w = torch.from_numpy(wave.astype(np.float32))[None]
    w = w - w.mean()
    fb = torchaudio.compliance.kaldi.fbank(
        w, htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
        num_mel_bins=cfg.num_mel_bins, dither=0.0, frame_shift=frame_shift_ms(wave.size, 16000, cfg))
    n = fb.shape[0]
    fb = torch.nn.functional.pad(fb, (0, 0, 0, max(0, cfg.target_frames - n)))[: cfg.target_frames]
    return ((fb - cfg.mean) / (cfg.std * 2)).numpy()


@pytest.mark.parametrize("shift", ["fixed-10ms", "fit-1024"])
@pytest.mark.parametrize("name", ["tone", "noise", "speech", "cfr", "short"])
def test_fbank_agrees_with_torchaudio_kaldi(media, name, shift):
    cfg = FbankConfig(shift=shift)
    wave = load_audio(getattr(media, name))
    ours = compute_fbank(wave, 16000, cfg)
    ref = _reference(wave, cfg)
    assert ours.shape == (1024, 128) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-3
    n_frames = 1 + (len(wave) - 400) // int(16000 * frame_shift_ms(len(wave), 16000, cfg) * 0.001)
    if shift == "fit-1024":
        assert n_frames >= 0.9 * 1024  # stretched over ~1024 frames (integer-sample shift)
    elif n_frames < 1024:  # zero-padded frames normalise to -mean / (2 std)
        assert np.allclose(ours[n_frames:], 4.2677393 / (2 * 4.5689974))


def test_fbank_crops_long_audio_and_uses_release_stats():
    wave = np.random.default_rng(0).normal(0, 0.1, 16000 * 12).astype(np.float32)
    cfg = FbankConfig(mean=-5.118, std=3.2527153)
    a = compute_fbank(wave, config=cfg)
    b = _reference(wave, cfg)
    assert a.shape == (1024, 128) and np.abs(a - b).max() <= 1e-3


def test_fbank_shorter_than_one_window_is_all_padding():
    out = compute_fbank(np.zeros(100, np.float32))
    assert out.shape == (1024, 128) and np.allclose(out, 4.2677393 / (2 * 4.5689974))


def test_fbank_config_validation():
    with pytest.raises(ValueError, match="unknown fbank shift"):
        FbankConfig(shift="fit-2048")


def test_load_fbank(media):
    x = load_fbank(media.speech, FbankConfig(shift="fit-1024"))
    assert x.shape == (1024, 128) and x.std() > 0.1
    with pytest.raises(MediaError, match="no audio stream"):
        load_fbank(media.noaudio)


def _kaldi(wave: np.ndarray, shift_ms: float, mean: float, std: float, bins: int = 128, frames: int = 1024):
    """torchaudio's Kaldi fbank with every setting given as a number (no FbankConfig)."""
    import torchaudio
    w = torch.from_numpy(wave.astype(np.float32))[None]
    fb = torchaudio.compliance.kaldi.fbank(w - w.mean(), htk_compat=True, sample_frequency=16000, use_energy=False,
                                           window_type="hanning", num_mel_bins=bins, dither=0.0, frame_shift=shift_ms)
    fb = torch.nn.functional.pad(fb, (0, 0, 0, max(0, frames - fb.shape[0])))[:frames]
    return ((fb - mean) / (2 * std)).numpy()


@pytest.mark.parametrize("n", [800, 16000 * 3 + 123, 16000 * 11])
@pytest.mark.parametrize("shift", ["fixed-10ms", "fit-1024"])
def test_synthetic_waves_agree_with_kaldi(n, shift):
    """Chirp plus noise (no media files): short, medium and longer than 1024 frames, at
    both shifts and the release's statistics; 64 bins over 512 frames too."""
    rng = np.random.default_rng(n)
    t = np.arange(n) / 16000
    wave = (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(n) + 0.2).astype(np.float32)
    fit_ms = max(1000.0 * n / 16000 / 1024, 1000.0 / 16000)
    shift_ms = fit_ms if shift == "fit-1024" else 10.0
    cfg = FbankConfig(shift=shift, mean=-5.118, std=3.2527153)
    assert frame_shift_ms(n, 16000, cfg) == pytest.approx(shift_ms)
    ours = compute_fbank(wave, 16000, cfg)
    ref = _kaldi(wave, shift_ms, -5.118, 3.2527153)
    assert ours.shape == (1024, 128) and np.abs(ours - ref).max() <= 1e-3
    small = FbankConfig(shift=shift, num_mel_bins=64, target_frames=512)
    shift_small = max(1000.0 * n / 16000 / 512, 1000.0 / 16000) if shift == "fit-1024" else 10.0
    np.testing.assert_allclose(compute_fbank(wave, 16000, small),
                               _kaldi(wave, shift_small, small.mean, small.std, 64, 512), atol=1e-3, rtol=0)


def test_fbank_config_rejects_a_non_positive_std():
    with pytest.raises(ValueError, match="std must be positive"):
        FbankConfig(std=0.0)
    assert FbankConfig(std=1e-3).to_dict() == {"shift": "fixed-10ms", "num_mel_bins": 128, "target_frames": 1024,
                                              "mean": -4.2677393, "std": 1e-3}


def test_kaldi_fbank_directly_defaults_inputs_and_edges():
    from extractors.fbank import kaldi_fbank
    rng = np.random.default_rng(1)
    wave = rng.standard_normal(4000)  # float64, as numpy gives it
    ours = kaldi_fbank(wave)  # the defaults: 16 kHz, 10 ms, 128 bins
    assert ours.dtype == torch.float32 and ours.shape == (1 + (4000 - 400) // 160, 128)
    np.testing.assert_allclose(ours.numpy(), _kaldi(wave, 10.0, 0.0, 0.5, frames=ours.shape[0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(kaldi_fbank(torch.from_numpy(wave)), ours)
    torch.testing.assert_close(kaldi_fbank(wave.tolist()), ours)
    # a window of exactly 2 ** k samples (20,480 Hz: 512) pads to 512, not 1024
    import torchaudio
    w = torch.from_numpy(wave.astype(np.float32))[None]
    ref = torchaudio.compliance.kaldi.fbank(w, htk_compat=True, sample_frequency=20480, use_energy=False,
                                            window_type="hanning", num_mel_bins=64, dither=0.0, frame_shift=10.0)
    torch.testing.assert_close(kaldi_fbank(wave, 20480, 10.0, 64), ref, atol=1e-3, rtol=0)
    assert kaldi_fbank(wave[:400]).shape == (1, 128)  # one window exactly: one frame
    assert kaldi_fbank(wave[:399]).shape == (0, 128)
    with pytest.raises(ValueError, match=r"^frame shift 0.01 ms is below one sample at 16000 Hz$"):
        kaldi_fbank(wave, 16000, 0.01)


def test_fbank_config_messages():
    with pytest.raises(ValueError, match=r"^unknown fbank shift 'x' \(choose from fixed-10ms, fit-1024\)$"):
        FbankConfig(shift="x")
    with pytest.raises(ValueError, match="^std must be positive$"):
        FbankConfig(std=-1.0)
