"""Checksums and lost chunks: a deleted chunk and a flipped byte are each named in one line
by `vtr store check` and by any read that meets them, and `--repair` marks their items
missing (tests/flows/test_integrity_extract.py redoes them with a real extract)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from storage import DONE, MISSING, StoreError, check_store, load_variable, open_group, open_store
from storage.synthetic import fill_random
from vtr.cli import app

runner = CliRunner()
FLIPPED = ("frame_features", ("c", "1", "0", "0"))  # videos 256..511
DELETED = ("caption_tokens", ("c", "0", "0", "0"))  # captions 0..255


@pytest.fixture
def filled(small_store):
    fill_random(small_store, ("frames", "audio", "text"))
    return str(small_store)


def flip(store: str, name: str, key: tuple[str, ...], at: int = 100) -> None:
    fn = os.path.join(store, name, *key)
    data = bytearray(open(fn, "rb").read())
    data[at] ^= 0x01
    open(fn, "wb").write(bytes(data))


def test_every_array_carries_a_checksum(filled):
    g = open_group(filled, mode="r")
    for name in g.array_keys():
        assert g[name].metadata.codecs[-1].to_dict()["name"] == "crc32c", name


@pytest.mark.parametrize("damage", ["flipped", "deleted"])
def test_damage_is_one_line_for_check_and_for_every_read(filled, damage):
    name, key = FLIPPED if damage == "flipped" else DELETED
    if damage == "flipped":
        flip(filled, name, key)
        why = "fails its crc32c checksum"
    else:
        os.remove(os.path.join(filled, name, *key))
        why = "missing, but 256 item(s) in it are marked done"
    line = f"array {name}, chunk {'/'.join(key)}: {why}"
    problems = check_store(filled)
    assert any(line in p for p in problems), problems
    r = runner.invoke(app, ["store", "check", filled])
    assert r.exit_code == 1 and line in r.output, r.output
    reads = {"xarray": lambda: open_store(filled)[name].values,
             "zarr": lambda: open_group(filled, mode="r")[name][:],
             "load_variable": lambda: load_variable(filled, name)}
    for how, read in reads.items():
        with pytest.raises(StoreError) as e:
            read()
        assert line in str(e.value) and "\n" not in str(e.value), how
    # a CLI command that reads it says the same in one line
    r = runner.invoke(app, ["store", "export-h5", filled, os.path.join(os.path.dirname(filled), "x.h5")])
    errors = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert r.exit_code == 1 and len(errors) == 1 and line in errors[0] and "Traceback" not in r.output, r.output


def test_a_chunk_never_written_is_no_problem(small_store):
    # frames not extracted at all: every frame chunk is absent and reads as fill values
    assert check_store(small_store) == []
    assert not open_store(small_store)["frame_features"].values.any()
    assert not load_variable(small_store, "frame_features").any()


def test_repair_marks_the_damaged_items_missing_and_nothing_else(filled):
    flip(filled, *FLIPPED)
    os.remove(os.path.join(filled, DELETED[0], *DELETED[1]))
    frames_before = open_group(filled, mode="r")["frames_state"][:]
    r = runner.invoke(app, ["store", "check", "--repair", filled])
    assert r.exit_code == 0, r.output
    assert r.output.count("repaired:") == 2 and f"{filled}: consistent" in r.output
    g = open_group(filled, mode="r")
    frames, text = np.asarray(g["frames_state"][:]), np.asarray(g["text_state"][:])
    assert (frames[256:512] == MISSING).all() and (frames[:256] == frames_before[:256]).all()
    assert (frames[512:] == frames_before[512:]).all()
    assert (text[:256] == MISSING).all() and (text[256:] == DONE).all()
    assert (np.asarray(g["audio_state"][:]) == DONE).all()
    # the corrupt chunk is gone, so the redo writes into a clean chunk
    assert not os.path.exists(os.path.join(filled, FLIPPED[0], *FLIPPED[1]))


def test_repair_refuses_what_no_step_rewrites(filled):
    flip(filled, "caption_text", ("c", "0"), at=10)
    r = runner.invoke(app, ["store", "check", "--repair", filled])
    assert r.exit_code == 1 and "no step rewrites it" in r.output and r.output.count("\n") == 1, r.output
