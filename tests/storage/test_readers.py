"""Readers: ``load_variable``'s direct chunk reads (which arrays take them, edge chunks,
absent and short chunks, checksums) and the HDF5 export's reader picked by its format name."""
from __future__ import annotations

import json
import os
import shutil

import dask.array as da
import h5py
import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

from storage import StoreError, export_h5, load_variable, open_any, open_store
from storage.integrity import ChunkError
from storage.readers import READERS, format_of
from storage.schema import FORMAT_NAME, SCHEMA_VERSION
from storage.synthetic import fill_random

ROWS, CHUNK = 10, 4  # chunks of 4, 4 and 2 rows: the last one an edge chunk


def _values(shape, dtype):
    """Every element different, so a row read from the wrong place or offset shows."""
    return (np.arange(int(np.prod(shape))) % 251 + 1).reshape(shape).astype(dtype)


# name -> (create_array options, whether load_variable reads the chunk files itself)
ARRAYS = {
    "plain": (dict(dtype="float32", shape=(ROWS, 3, 2), chunks=(CHUNK, 3, 2)), True),
    "crc": (dict(dtype="int16", shape=(ROWS, 5), chunks=(CHUNK, 5), compressors=[Crc32cCodec()]), True),
    "one_axis": (dict(dtype="uint8", shape=(ROWS,), chunks=(CHUNK,), compressors=[Crc32cCodec()]), True),
    "bools": (dict(dtype="bool", shape=(ROWS, 2), chunks=(CHUNK, 2)), True),
    "plain_axis": (dict(dtype="int32", shape=(ROWS,), chunks=(CHUNK,)), True),
    "dotted": (dict(dtype="float64", shape=(ROWS, 2), chunks=(CHUNK, 2),
                    chunk_key_encoding={"name": "default", "separator": "."}), True),
    "compressed": (dict(dtype="float32", shape=(ROWS, 3), chunks=(CHUNK, 3), compressors=[ZstdCodec(level=1)]),
                   False),
    "crc_then_zstd": (dict(dtype="float32", shape=(ROWS, 3), chunks=(CHUNK, 3),
                           compressors=[ZstdCodec(level=1), Crc32cCodec()]), False),
    "big_endian": (dict(dtype="int32", shape=(ROWS, 3), chunks=(CHUNK, 3), serializer=BytesCodec(endian="big")),
                   False),
    "v2_keys": (dict(dtype="float32", shape=(ROWS, 3), chunks=(CHUNK, 3),
                     chunk_key_encoding={"name": "v2", "separator": "."}), False),
    "split_rows": (dict(dtype="float32", shape=(ROWS, 6), chunks=(CHUNK, 3)), False),
    "scalar": (dict(dtype="float32", shape=(), chunks=()), False),
    "complex": (dict(dtype="complex64", shape=(ROWS, 2), chunks=(CHUNK, 2)), False),
}


@pytest.fixture
def group(tmp_path):
    path = str(tmp_path / "g.zarr")
    g = zarr.open_group(path, mode="w", zarr_format=3)
    want = {}
    for name, (opts, _) in ARRAYS.items():
        opts = {"compressors": None, **opts}
        arr = g.create_array(name, fill_value=7, **opts)
        want[name] = _values(opts["shape"], opts["dtype"]) if opts["shape"] else np.array(5, opts["dtype"])
        arr[...] = want[name]
    return path, want


def test_raw_arrays_are_read_from_their_chunk_files_others_through_zarr(group, monkeypatch):
    path, want = group
    for name in ARRAYS:
        np.testing.assert_array_equal(load_variable(path, name), want[name], err_msg=name)

    def no_zarr(*_a, **_k):
        raise RuntimeError("read through zarr")

    # with zarr's own read path gone, only the arrays read directly still load
    monkeypatch.setattr(zarr.Array, "__getitem__", no_zarr)
    for name, (_, direct) in ARRAYS.items():
        if direct:
            out = load_variable(path, name)
            assert out.dtype == want[name].dtype and out.shape == want[name].shape, name
            np.testing.assert_array_equal(out, want[name], err_msg=name)
        else:
            with pytest.raises(RuntimeError, match="read through zarr"):
                load_variable(path, name)


def test_absent_chunks_read_as_the_fill_value(group):
    path, want = group
    for name, key in (("plain", "c/1/0/0"), ("crc", "c/2/0"), ("one_axis", "c/0"), ("dotted", "c.2.0"),
                      ("plain_axis", "c/1")):
        os.remove(os.path.join(path, name, *key.split("/")))
        got = load_variable(path, name)
        k = int(key.replace(".", "/").split("/")[1])
        rows = slice(k * CHUNK, min(ROWS, (k + 1) * CHUNK))
        assert (got[rows] == 7).all(), name
        rest = np.ones(ROWS, bool)
        rest[rows] = False
        np.testing.assert_array_equal(got[rest], want[name][rest], err_msg=name)


@pytest.mark.parametrize("name,key,cut", [("plain", "c/0/0/0", 4), ("plain", "c/2/0/0", 4),
                                          ("crc", "c/1/0", 2), ("crc", "c/2/0", 2), ("crc", "c/0/0", 6)])
def test_a_short_chunk_file_is_one_line_with_its_sizes(group, name, key, cut):
    path, _ = group
    fn = os.path.join(path, name, *key.split("/"))
    data = open(fn, "rb").read()
    open(fn, "wb").write(data[:-cut])
    crc = name == "crc"
    body = CHUNK * int(np.prod(ARRAYS[name][0]["shape"][1:])) * np.dtype(ARRAYS[name][0]["dtype"]).itemsize
    with pytest.raises(StoreError) as e:
        load_variable(path, name)
    # the edge chunk too is stored whole, so it has the full chunk's size
    assert str(e.value) == f"{path}: chunk {fn} holds {len(data) - cut} bytes, expected {body + 4 * crc}"


def test_a_flipped_byte_in_a_full_or_an_edge_chunk_fails_its_checksum(group):
    path, _ = group
    for key in ("c/1/0", "c/2/0"):
        fn = os.path.join(path, "crc", *key.split("/"))
        data = bytearray(open(fn, "rb").read())
        data[3] ^= 0x10
        open(fn, "wb").write(bytes(data))
        with pytest.raises(ChunkError, match=f"^{path}: array crc, chunk {key}: fails its crc32c checksum"):
            load_variable(path, "crc")
        data[3] ^= 0x10
        open(fn, "wb").write(bytes(data))
        load_variable(path, "crc")


def test_a_lost_chunk_of_done_items_is_an_error_of_undone_ones_the_fill(tmp_path):
    from storage.synthetic import create_synthetic_store
    store = str(tmp_path / "s.zarr")
    create_synthetic_store(store, 600, 2, n_audio_tokens=10, audio_dim=8)
    fill_random(store, ("frames",))
    before = load_variable(store, "frame_features")
    assert before[256:512].any()
    os.remove(os.path.join(store, "frame_features", "c", "1", "0", "0"))
    with pytest.raises(ChunkError, match=f"^{store}: array frame_features, chunk c/1/0/0: missing, but 256 item"):
        load_variable(store, "frame_features")
    g = zarr.open_group(store, mode="r+")
    state = np.asarray(g["frames_state"][:])
    state[256:512] = 0  # nobody claims those videos any more: the chunk is just unwritten
    g["frames_state"][:] = state
    after = load_variable(store, "frame_features")
    assert not after[256:512].any()
    np.testing.assert_array_equal(after[:256], before[:256])
    np.testing.assert_array_equal(after[512:], before[512:])


def test_the_export_is_read_lazily_with_its_dims_attributes_and_strings(tmp_path):
    from storage.synthetic import create_synthetic_store
    store = str(tmp_path / "s.zarr")
    create_synthetic_store(store, 40, 2, n_audio_tokens=10, audio_dim=8)
    fill_random(store, ("frames", "text"))
    out = str(tmp_path / "s.h5")
    export_h5(store, out)
    assert format_of(out) == "vtr-hdf5" and format_of(store) == FORMAT_NAME
    assert set(READERS) == {FORMAT_NAME, "vtr-hdf5"}
    a, b = open_store(store), open_any(out)
    assert isinstance(b.frame_features.data, da.Array)  # nothing read until asked
    with h5py.File(out, "r") as f:
        assert b.frame_features.data.chunks[0][0] == f["frame_features"].chunks[0]
    assert b.frame_features.dims == ("video", "frame", "dim") and b.caption_video.dims == ("caption",)
    assert b.caption_text.dtype.kind in "OU" and isinstance(b.caption_text.values[0], str)
    np.testing.assert_array_equal(b.caption_text.values, a.caption_text.values)
    np.testing.assert_array_equal(b.frame_features.values, a.frame_features.values)
    assert list(b.video.values) == list(a.video.values) and "video" in b.coords
    assert b.attrs["vtr_schema_version"] == SCHEMA_VERSION and b.attrs["layout"] == a.attrs["layout"]
    old = str(tmp_path / "old.h5")  # the reader keeps ``out`` open
    shutil.copy(out, old)
    with h5py.File(old, "r+") as f:
        f.attrs["vtr_schema_version"] = json.dumps(SCHEMA_VERSION - 1)
    with pytest.raises(StoreError) as e:
        open_any(old)
    assert str(e.value) == f"{old}: schema version {SCHEMA_VERSION - 1}, this vtr reads version {SCHEMA_VERSION}"


def test_a_file_that_is_no_export_is_named(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(StoreError) as e:
        open_any(text)
    assert str(e.value) == f"{text}: neither a vtr Zarr store nor an HDF5 export"
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["vtr_format"] = json.dumps("someone-else")
    with pytest.raises(StoreError) as e:
        open_any(other)
    assert str(e.value) == f"{other}: unknown store format 'someone-else' (known: vtr-zarr, vtr-hdf5)"
    bare = tmp_path / "bare.h5"
    h5py.File(bare, "w").close()
    assert format_of(bare) == ""


def test_a_remote_store_is_read_through_zarr(tmp_path):
    """A URL is never taken for a local folder: its chunks come through zarr (fsspec)."""
    url = "memory://vtr-readers-test/g.zarr"
    g = zarr.open_group(url, mode="w", zarr_format=3)
    want = _values((ROWS, 3), "float32")
    g.create_array("x", shape=want.shape, chunks=(CHUNK, 3), dtype="float32", compressors=None, fill_value=7)[...] = want
    try:
        np.testing.assert_array_equal(load_variable(url, "x"), want)
    finally:
        import fsspec
        fsspec.filesystem("memory").rm("/vtr-readers-test", recursive=True)


def test_open_any_hands_its_options_to_the_reader(tmp_path):
    from storage.synthetic import create_synthetic_store
    store = str(tmp_path / "s.zarr")
    create_synthetic_store(store, 4, 1, n_audio_tokens=10, audio_dim=8)
    assert open_any(store, dataset="synthetic").attrs["dataset"] == "synthetic"
    with pytest.raises(StoreError, match="a store of dataset 'synthetic', not 'msrvtt'"):
        open_any(store, dataset="msrvtt")
