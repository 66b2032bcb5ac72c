"""One run per store (D1): a second run on a held store waits or refuses naming the holder,
and two runs started together with different CLIP models never mix their features."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from flows.config import ExtractConfig
from flows.errors import ExtractError
from flows.extract import extract_msrvtt
from storage import DONE, MISSING, as_str, check_store, open_group, read_attrs
from storage.lock import StoreLock, lock_holder

from .conftest import vtr_cmd, vtr_env

TINY = dict(random_init=True, ast_size="tiny", crawl_retries=0, workers=1)


def test_held_store_is_refused_naming_the_holder_before_anything_is_created(tmp_path, tiny_data):
    store = str(tmp_path / "s.zarr")
    with StoreLock(store, "the-other-run"):
        with pytest.raises(ExtractError) as e:
            extract_msrvtt(data_root=str(tiny_data), store=store, config=ExtractConfig(**TINY, steps=["probe"]))
    msg = str(e.value)
    assert msg.startswith(f"{store}: in use by run the-other-run (host {socket.gethostname()}, pid {os.getpid()}")
    assert "\n" not in msg
    assert not os.path.exists(store)


def test_a_run_waits_for_the_holder_within_the_bound(tmp_path, tiny_data):
    store = str(tmp_path / "s.zarr")
    other = StoreLock(store, "the-other-run").acquire()
    threading.Timer(3.0, other.release).start()
    res = extract_msrvtt(data_root=str(tiny_data), store=store,
                         config=ExtractConfig(**TINY, steps=["probe"], lock_wait_s=120))
    assert res["steps"]["probe"]["done"] == 5  # video2 is corrupt
    assert lock_holder(store) is None


def test_lock_of_a_killed_run_is_taken_over(tmp_path, tiny_data):
    store = tmp_path / "s.zarr"
    dead = subprocess.Popen(["true"])
    dead.wait()
    Path = type(tmp_path)
    Path(f"{store}.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "pid_start": None,
                                                 "started": time.time(), "run_id": "killed-run"}))
    res = extract_msrvtt(data_root=str(tiny_data), store=str(store), config=ExtractConfig(**TINY, steps=["probe"]))
    assert res["steps"]["probe"]["done"] == 5
    assert lock_holder(str(store)) is None


def _caption_embeddings(model: str, texts: list[str]) -> np.ndarray:
    from extractors.clip_encoder import create_clip_encoder
    from extractors.engine import encode_captions

    enc = create_clip_encoder(model=model, random_init=True, device="cpu")
    return np.stack([r.data["caption_embedding"] for r in encode_captions(enc, texts, batch_size=64)])


def test_two_runs_with_different_models_never_mix(tmp_path, tiny_data):
    store = tmp_path / "s.zarr"
    env = vtr_env(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    procs = {m: subprocess.Popen(vtr_cmd("extract", "--data-root", tiny_data, "--store", store, "--random-init",
                                         "--ast-size", "tiny", "--workers", "1", "--clip-model", m,
                                         "--steps", "probe,text"),
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for m in ("ViT-B-16", "ViT-B-32")}
    out = {m: (p.communicate(timeout=540), p.returncode) for m, p in procs.items()}
    ok = [m for m, (_, rc) in out.items() if rc == 0]
    assert len(ok) == 1, {m: (rc, err[-2000:]) for m, ((_, err), rc) in out.items()}
    winner, loser = ok[0], next(m for m in out if m not in ok)
    (_, err), rc = out[loser]
    assert rc == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    assert "in use by run" in lines[0] or "mixing them is refused" in lines[0], lines[0]

    assert check_store(str(store)) == []
    assert read_attrs(str(store))["provenance"]["text"]["model"] == f"open_clip {winner}"
    g = open_group(str(store), mode="r")
    assert (np.asarray(g["text_state"][:]) == DONE).all()
    assert (np.asarray(g["frames_state"][:]) == MISSING).all()
    stored = np.asarray(g["caption_embedding"][:], dtype=np.float32)
    texts = as_str(g["caption_text"][:]).tolist()
    assert np.allclose(stored, _caption_embeddings(winner, texts), atol=2e-2)
    assert not np.allclose(stored, _caption_embeddings(loser, texts), atol=2e-2)
    assert lock_holder(str(store)) is None
    check = subprocess.run(vtr_cmd("store", "check", store), env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
