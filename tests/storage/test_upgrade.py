"""`vtr store upgrade` on a store written by the schema-1 code (tests/storage/data), and the
one-line pointer to it that an old store gets everywhere it is opened."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from storage import (DONE, MISSING, SCHEMA_VERSION, StepWriter, StoreError, check_store, open_store, store_info,
                     upgrade_store)
from storage.upgrade import UPGRADES
from vtr.cli import app

V1 = Path(__file__).parent / "data" / "v1_store.zarr"
runner = CliRunner()


@pytest.fixture
def old(tmp_path) -> str:
    path = tmp_path / "old.zarr"
    shutil.copytree(V1, path)
    return str(path)


def test_an_old_store_names_the_upgrade_command_in_one_line(old):
    for cmd in (["store", "info", old], ["store", "check", old]):
        r = runner.invoke(app, cmd)
        assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
        assert f"schema version 1" in r.output and f"vtr store upgrade {old}" in r.output
    with pytest.raises(StoreError, match="vtr store upgrade"):
        StepWriter(old, "frames")


def test_upgrade_converts_the_done_markers_and_keeps_everything(old):
    before = zarr.open_group(old, mode="r")
    kept = {name: np.asarray(before[name][:]) for name in ("frame_features", "tags_state", "probe_error",
                                                           "style_caption_embedding", "phrase_embedding")}
    r = runner.invoke(app, ["store", "upgrade", old])
    assert r.exit_code == 0, r.output
    assert "style_state" in r.output and f"schema version {SCHEMA_VERSION}" in r.output
    ds = open_store(old)
    assert ds.attrs["vtr_schema_version"] == SCHEMA_VERSION
    # the row whose source index a crash left at -1 is missing; the others are done
    assert ds["style_state"].values.tolist() == [DONE, DONE, DONE, MISSING]
    assert (ds["phrase_state"].values == DONE).all()
    for name, values in kept.items():
        np.testing.assert_array_equal(ds[name].values, values)
    info = store_info(old)
    assert info["steps"]["style"] == {"done": 3, "missing": 1, "failed": 0}
    assert info["steps"]["probe"] == {"done": 2, "missing": 3, "failed": 1}
    assert check_store(old) == []
    # the style step's writer takes the store as it takes any other step's
    assert StepWriter(old, "style").pending().tolist() == [3]
    # running it again changes nothing
    assert upgrade_store(old) == []
    r = runner.invoke(app, ["store", "upgrade", old])
    assert r.exit_code == 0 and "already" in r.output


def test_an_interrupted_upgrade_is_finished_by_running_it_again(old, monkeypatch):
    def crash(group, layout):
        UPGRADES_REAL(group, layout)
        raise KeyboardInterrupt  # after the new arrays, before the version is bumped

    UPGRADES_REAL = UPGRADES[1]
    monkeypatch.setitem(UPGRADES, 1, crash)
    with pytest.raises(KeyboardInterrupt):
        upgrade_store(old)
    assert zarr.open_group(old, mode="r").attrs["vtr_schema_version"] == 1  # still the old store
    monkeypatch.setitem(UPGRADES, 1, UPGRADES_REAL)
    assert upgrade_store(old)
    assert open_store(old)["style_state"].values.tolist() == [DONE, DONE, DONE, MISSING]


def test_upgrade_refuses_what_it_cannot_read(tmp_path, old):
    zarr.open_group(old, mode="r+").attrs["vtr_schema_version"] = SCHEMA_VERSION + 1
    r = runner.invoke(app, ["store", "upgrade", old])
    assert r.exit_code == 1 and "no upgrade" in r.output and r.output.count("\n") == 1
    r = runner.invoke(app, ["store", "upgrade", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "no such store" in r.output


def test_schema_command_prints_every_variable():
    r = runner.invoke(app, ["store", "schema", "--markdown"])
    assert r.exit_code == 0
    lines = r.output.strip().splitlines()
    assert lines[0] == "| variable | dims | dtype | step | doc |"
    names = {name for line in lines[2:] for name in line.split("`")[1::2]}
    from storage.schema import ALL_VARIABLES
    assert set(ALL_VARIABLES) <= names  # every variable, state/error pairs sharing a row
    assert "| `frame_features` | video, frame, dim | float16 | frames |" in r.output
    plain = runner.invoke(app, ["store", "schema"]).output
    assert plain.splitlines()[0].split()[:4] == ["variable", "dims", "dtype", "step"]


def test_upgrade_writes_a_checksum_on_every_array(old):
    changes = upgrade_store(old)
    assert any("crc32c checksums on" in c for c in changes), changes
    g = zarr.open_group(old, mode="r")
    for name in g.array_keys():
        assert g[name].metadata.codecs[-1].to_dict()["name"] == "crc32c", name
    # chunks version 2 left out because they held only fill values are there for done items
    assert check_store(old) == []


def test_an_upgrade_interrupted_while_rewriting_arrays_finishes_on_a_rerun(old, monkeypatch):
    import storage.upgrade as up

    kept = {n: np.asarray(zarr.open_group(old, mode="r")[n][:]) for n in ("frame_features", "probe_error")}
    real, calls = up.create_array, []

    def crash_on_the_tenth(*a, **kw):
        calls.append(a[1])
        if len(calls) == 10:  # nine arrays rewritten, the tenth half made
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(up, "create_array", crash_on_the_tenth)
    with pytest.raises(KeyboardInterrupt):
        upgrade_store(old)
    assert zarr.open_group(old, mode="r").attrs["vtr_schema_version"] == 2  # v1 -> v2 done, v3 not
    monkeypatch.setattr(up, "create_array", real)
    assert upgrade_store(old)
    assert not [e for e in Path(old).iterdir() if "__v" in e.name]  # no half-made array left
    assert check_store(old) == []
    g = zarr.open_group(old, mode="r")
    for name, values in kept.items():
        np.testing.assert_array_equal(np.asarray(g[name][:]), values)
