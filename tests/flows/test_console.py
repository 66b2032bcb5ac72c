"""What `vtr extract` leaves on the console and its exit status: a user error is one
`error:` line (no Prefect traceback before it, no server chatter after it), and a step
refused as a whole fails the run with its reason."""
import subprocess

import pytest

from storage import open_store

from .conftest import TINY, copy_store, vtr_cmd, vtr_env

pytestmark = pytest.mark.slow


def _extract(*args, env=None):
    r = subprocess.run(vtr_cmd("extract", *args), env=env or vtr_env(), capture_output=True, text=True,
                       timeout=600)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    return r.returncode, lines, r.stderr


def test_annotation_error_is_one_line_on_a_server_of_its_own(tmp_path, tiny_data):
    (tmp_path / "empty").mkdir()
    env = vtr_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL")  # `vtr extract` starts and stops its own server
    code, lines, err = _extract("--data-root", tmp_path / "empty", "--store", tmp_path / "a.zarr", *TINY, env=env)
    assert code == 1, err
    assert lines[-1].startswith("error: ") and "MSRVTT_data.json" in lines[-1], err
    assert "Traceback" not in err and "Stopping temporary server" not in err, err
    assert not [ln for ln in lines if "Error" in ln and not ln.startswith("error: ") and "Finished in state" not in ln], err


def test_weights_with_random_init_fail_the_run(tmp_path, tiny_data):
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"not used")
    code, lines, err = _extract("--data-root", tiny_data, "--store", tmp_path / "w.zarr", *TINY,
                                "--clip-weights", weights, "--steps", "text")
    assert code == 1, err
    assert lines[-1].startswith("error: ") and "--random-init" in lines[-1] and str(weights) in lines[-1], err
    assert "Traceback" not in err, err


def test_another_clip_model_on_a_started_step_fails_the_run(tmp_path, tiny_data, tiny_store):
    store = copy_store(tiny_store[0], tmp_path)
    steps = ["--steps", "probe,compress,frames"]
    # the corrupt video2 failed: the re-run retries it, with another CLIP
    code, lines, err = _extract("--data-root", tiny_data, "--store", store, *TINY, *steps,
                                "--clip-model", "ViT-B-16")
    assert code == 1, err
    assert lines[-1].startswith("error: ") and "ViT-B-32" in lines[-1] and "ViT-B-16" in lines[-1], err
    assert "Traceback" not in err, err
    assert "frames" in lines[-1] and "refused" in lines[-1]  # refused up front, before any step
    assert open_store(str(store)).attrs["provenance"]["frames"]["model"].endswith("ViT-B-32")
