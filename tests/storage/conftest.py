import pytest

from storage.synthetic import create_synthetic_store


@pytest.fixture
def small_store(tmp_path):
    """600 videos x 3 captions, tiny audio geometry: three video blocks of 256."""
    path = tmp_path / "s.zarr"
    create_synthetic_store(path, 600, 3, n_audio_tokens=10, audio_dim=8)
    return path
