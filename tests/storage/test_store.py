import os
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from storage import (SCHEMA_VERSION, StoreError, StoreLayout, create_store, open_store,
                     set_provenance)
from storage.schema import REQUIRED, VARIABLES


def _manifest(n=5):
    return dict(dataset="msrvtt", video_ids=[f"video{i}" for i in range(n)],
                splits=["train"] * (n - 2) + ["val", "test"],
                caption_text=[f"c{i}" for i in range(2 * n)],
                caption_video=[i // 2 for i in range(2 * n)])


def test_contract_dims_and_dtypes(small_store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # opens directly: consolidated, no fallback warning
        ds = xr.open_zarr(small_store)
    assert ds.sizes["video"] == 600 and ds.sizes["caption"] == 1800
    assert ds.sizes["frame"] == 12 and ds.sizes["dim"] == 512 and ds.sizes["word"] == 32
    assert "video" in ds.coords and ds.video.values[3] == "video3"
    assert ds.frame_features.dims == ("video", "frame", "dim")
    assert ds.frame_features.dtype == np.float16 and ds.frame_mask.dtype == bool
    assert ds.audio_tokens.dims == ("video", "audio_token", "audio_dim")
    assert ds.caption_tokens.dims == ("caption", "word", "dim") and ds.caption_tokens.dtype == np.float16
    assert ds.caption_mask.dtype == bool and ds.caption_video.dtype == np.int32
    assert set(np.unique(ds.split.values)) <= {"train", "val", "test"}
    assert ds.attrs["vtr_schema_version"] == SCHEMA_VERSION
    # training reads whole videos: chunks are 256 videos, audio one video each
    assert ds.frame_features.encoding["chunks"] == (256, 12, 512)
    assert ds.audio_tokens.encoding["chunks"][0] == 1


def test_chunk_sizes_for_default_layout():
    L = StoreLayout(n_videos=10000, n_captions=200000)
    ff = L.chunk_for("video") * L.n_frames * L.dim * 2
    at = 1 * L.n_audio_tokens * L.audio_dim * 2
    ct = L.chunk_for("caption") * L.n_words * L.dim * 2
    for size in (ff, at, ct):
        assert 1 << 20 <= size <= 8 << 20


def test_open_store_returns_dataset_and_checks_dataset_name(small_store):
    ds = open_store(small_store)
    assert isinstance(ds, xr.Dataset)
    with pytest.raises(StoreError, match="dataset 'synthetic', not 'msrvtt'"):
        open_store(small_store, dataset="msrvtt")


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "nope.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match=str(tmp_path / "plain")):
        open_store(tmp_path / "plain")
    g = zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3)
    g.attrs["x"] = 1
    with pytest.raises(StoreError, match="not a vtr store"):
        open_store(tmp_path / "other.zarr")


def test_other_schema_version(small_store):
    zarr.open_group(small_store, mode="r+").attrs["vtr_schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match=f"{small_store}: schema version {SCHEMA_VERSION + 1}"):
        open_store(small_store)


@pytest.mark.parametrize("name", ["frame_features", "caption_mask", "frames_state"])
def test_missing_variable(small_store, name):
    assert name in REQUIRED
    g = zarr.open_group(small_store, mode="r+")
    del g[name]
    zarr.consolidate_metadata(str(small_store))
    with pytest.raises(StoreError, match=f"{small_store}: missing variable\\(s\\) {name}"):
        open_store(small_store)


def test_create_refuses_to_overwrite(small_store):
    before = sorted(os.listdir(small_store))
    with pytest.raises(StoreError, match="already exists"):
        create_store(small_store, **_manifest())
    assert sorted(os.listdir(small_store)) == before


@pytest.mark.parametrize("change, msg", [
    (dict(caption_video=[0, 0, 1, 1, 2, 2, 3, 3, 4, 9]), "outside"),
    (dict(splits=["train", "bogus", "train", "val", "test"]), "unknown split"),
    (dict(video_ids=["a", "a", "b", "c", "d"]), "not unique"),
    (dict(video_ids=[], splits=[], caption_text=[], caption_video=[]), "no videos"),
])
def test_create_rejects_bad_manifests(tmp_path, change, msg):
    with pytest.raises(StoreError, match=msg):
        create_store(tmp_path / "x.zarr", **{**_manifest(), **change})
    assert not (tmp_path / "x.zarr").exists()


def test_unwritable_location(tmp_path):
    # (chmod is no test under root, which CI is: a missing parent and a file parent are)
    with pytest.raises(StoreError, match="cannot write"):
        create_store(tmp_path / "missing" / "deeper" / "x.zarr", **_manifest())
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot write"):
        create_store(tmp_path / "file" / "x.zarr", **_manifest())


def test_provenance_is_plain_json_and_keeps_consolidation(small_store):
    set_provenance(small_store, "frames", {"model": "ViT-B-32", "n": np.int64(3), "a": np.arange(2)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(small_store)
    assert ds.attrs["provenance"]["frames"] == {"model": "ViT-B-32", "n": 3, "a": [0, 1]}


def test_every_variable_has_dimension_names(small_store):
    g = zarr.open_group(small_store, mode="r")
    for name in VARIABLES:
        assert g[name].metadata.dimension_names == VARIABLES[name].dims


def test_the_plain_schema_table_lines_up_its_columns():
    """`vtr store schema`'s text form: a header, then one left-aligned row per variable,
    the doc last, each column starting where its header does."""
    from storage.schema import ALL_VARIABLES, schema_table
    lines = schema_table().splitlines()
    assert len(lines) == len(ALL_VARIABLES) + 1 and lines[0].split() == ["variable", "dims", "dtype", "step", "doc"]
    at = [lines[0].index(h) for h in ("dims", "dtype", "step", "doc")]
    assert lines[0][at[3]:] == "doc"
    for line, (name, spec) in zip(lines[1:], ALL_VARIABLES.items()):
        assert line.startswith(name + " ") and line[:at[0]].strip() == name
        assert line[at[0]:at[1]].strip() == ", ".join(spec.dims) and line[at[1]:at[2]].strip() == spec.dtype
        assert line[at[2]:at[3]].strip() == spec.step and line[at[3]:].rstrip() == spec.doc
        assert line[at[3] - 2:at[3]] == "  "
