"""The store writer on its background thread: results written while the next ones are
computed, and a failed write stops the step with one line, leaving nothing after it done."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from extractors.engine import ItemResult
from flows.background import BackgroundWriter
from flows.step_io import run_step_items
from storage import DONE, FAILED, MISSING, StepWriter, StoreError, StoreLayout, create_store, open_store

N = 12  # videos, in blocks of 2: one write per block


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.zarr"
    ids = [f"v{i}" for i in range(N)]
    create_store(path, dataset="t", video_ids=ids, splits=["train"] * N, caption_text=ids,
                 caption_video=list(range(N)), video_paths=[f"{v}.mp4" for v in ids], data_root=str(tmp_path),
                 layout=StoreLayout(n_videos=N, n_captions=N, video_chunk=2, caption_chunk=4))
    return str(path)


def _probe(j: int) -> dict:
    return {"duration": np.float32(j), "fps": np.float32(25), "width": np.int32(64), "height": np.int32(48),
            "rotation": np.int16(0), "source_has_audio": np.bool_(False)}


def _compute(produced: list[int], threads: set, delay_s: float = 0.0):
    def compute(inp):
        for j in range(len(inp)):
            time.sleep(delay_s)
            produced.append(j)
            threads.add(threading.current_thread().name)
            yield ItemResult(j, None, "unreadable") if inp.idx[j] == 1 else ItemResult(j, _probe(int(inp.idx[j])))
    return compute


def test_results_are_written_on_the_writer_thread(store, monkeypatch):
    writers = set()
    real = StepWriter.write

    def write(self, *a, **kw):
        writers.add(threading.current_thread().name)
        return real(self, *a, **kw)

    monkeypatch.setattr(StepWriter, "write", write)
    produced, threads = [], set()
    assert run_step_items(store, "probe", _compute(produced, threads)) == {"done": N - 1, "failed": 1}
    assert writers == {"store-writer"} and "store-writer" not in threads
    ds = open_store(store)
    assert ds["probe_state"].values.tolist() == [DONE, FAILED] + [DONE] * (N - 2)
    assert ds["duration"].values[N - 1] == N - 1


def test_a_failed_write_stops_the_step_and_marks_nothing_after_it_done(store, monkeypatch):
    calls = []
    real = StepWriter.write

    def write(self, idx, *a, **kw):
        calls.append(idx.tolist())
        if len(calls) == 2:
            # part of the block's data lands, as when a disk fills up mid-write
            self.group["duration"][int(idx[0]):int(idx[-1]) + 1] = 99.0
            raise OSError(28, "No space left on device")
        return real(self, idx, *a, **kw)

    monkeypatch.setattr(StepWriter, "write", write)
    produced, threads = [], set()
    with pytest.raises(StoreError) as e:
        run_step_items(store, "probe", _compute(produced, threads, delay_s=0.05))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (f"{store}: writing probe items 2..3 failed, the run stops: OSError: "
                   "[Errno 28] No space left on device")
    assert calls[:2] == [[0, 1], [2, 3]] and len(calls) == 2  # nothing written after the failure
    assert len(produced) < N  # the encoder side stopped too
    states = open_store(store)["probe_state"].values.tolist()
    assert states == [DONE, FAILED] + [MISSING] * (N - 2)
    # the rerun redoes exactly the items not done
    monkeypatch.undo()
    assert run_step_items(store, "probe", _compute([], set()), retry_failed=False) == {"done": N - 2, "failed": 0}
    assert open_store(store)["duration"].values[2] == 2.0


def test_writer_drops_queued_writes_after_a_failure_and_keeps_the_first_error():
    done = []
    gate = threading.Event()

    def write(k):
        gate.wait()
        if k == 1:
            raise ValueError("first")
        if k == 3:
            raise ValueError("second")
        done.append(k)

    w = BackgroundWriter(lambda args, err: RuntimeError(f"write {args[0]}: {err}"), depth=8)
    for k in range(5):
        w.submit(write, k)
    gate.set()
    with pytest.raises(RuntimeError, match="^write 1: first$"):
        w.close()
    assert done == [0]
    with pytest.raises(RuntimeError, match="write 1"):
        w.submit(write, 9)


def test_a_failed_write_fails_the_extraction_run_in_one_line(tmp_path, tiny_data, monkeypatch):
    from flows.config import ExtractConfig
    from flows.errors import ExtractError
    from flows.extract import extract_msrvtt

    real = StepWriter.write

    def write(self, idx, data=None, errors=None):
        if data:  # the feature write fails; recording the block's failure still works
            raise OSError(28, "No space left on device")
        return real(self, idx, data, errors)

    monkeypatch.setattr(StepWriter, "write", write)
    store = tmp_path / "s.zarr"
    cfg = ExtractConfig(random_init=True, crawl_retries=0, workers=1, steps=["probe"])
    with pytest.raises(ExtractError) as e:
        extract_msrvtt(data_root=str(tiny_data), store=str(store), config=cfg)
    assert str(e.value) == (f"probe refused: {store}: writing probe items 0..5 failed, the run stops: "
                            "OSError: [Errno 28] No space left on device")
    assert DONE not in open_store(store)["probe_state"].values.tolist()
