"""The flow in Prefect's ephemeral mode, in process: a complete store, failures recorded."""
import numpy as np
from typer.testing import CliRunner

from flows.config import ExtractConfig
from flows.extract import extract_msrvtt
from storage import DONE, FAILED, check_store, open_store, store_info
from storage.synthetic import create_synthetic_store
from vtr.cli import app

from .conftest import TINY, copy_store

runner = CliRunner()
TINY_CONFIG = ExtractConfig(random_init=True, ast_size="tiny", crawl_retries=0, workers=1, tag_min_count=2)


def test_flow_completes_and_records_the_corrupt_video(tiny_store):
    store, result = tiny_store
    ds = open_store(store)
    ids = list(ds.video.values)
    bad = ids.index("video2")
    good = [i for i in range(len(ids)) if i != bad]
    assert ds.probe_state.values[bad] == FAILED and "video2.mp4" in str(ds.probe_error.values[bad])
    assert ds.frames_state.values[bad] == FAILED and ds.frames_error.values[bad]
    assert (ds.frames_state.values[good] == DONE).all()
    assert (ds.text_state.values == DONE).all()
    assert (ds.audio_state.values[good] == DONE).all()
    # audio comes from the original track where there is one; the silent videos' audio is
    # crawled from the sample's loopback server
    src = ds.audio_source.values[good]
    assert set(src) == {"original", "crawled"}
    assert ds.has_audio.values[good].all() and (ds.crawl_state.values[good] == DONE).all()
    assert ds.frame_mask.values[good].any(axis=1).all()
    assert (ds.tags_state.values[good] == DONE).all() and ds.sizes["phrase"] > 0
    # the style step rewrote each test video's first caption with the same CLIP
    assert ds.sizes["style_caption"] == result["steps"]["style"]["rows"] > 0
    assert (ds.style_state.values == DONE).all() and (ds.style_caption_source.values >= 0).all()
    assert prov_model(ds, "style") == prov_model(ds, "text")
    assert check_store(store) == []
    assert result["failures"] >= 1 and result["steps"]["validate"]["problems"] == 0
    prov = ds.attrs["provenance"]
    assert prov["frames"]["weights_sha256"] == "RANDOM-INIT" and prov["audio"]["weights_sha256"] == "RANDOM-INIT"
    assert any("RANDOM-INIT" in w for w in store_info(store)["warnings"])


def prov_model(ds, step):
    p = ds.attrs["provenance"][step]
    return p["model"], p["weights_sha256"]


def test_rerun_redoes_nothing_finished(tiny_store, tiny_data, tmp_path):
    store = str(copy_store(tiny_store[0], tmp_path))  # a copy: the session's store stays as made
    before = open_store(store).frame_features.values.copy()
    result = extract_msrvtt(data_root=str(tiny_data), store=store, config=TINY_CONFIG.model_copy(
        update={"steps": ["probe", "compress", "frames", "audio", "text"]}))
    for step in ("frames", "audio", "text"):
        assert result["steps"][step]["done"] == 0, step
    np.testing.assert_array_equal(open_store(store).frame_features.values, before)


def _cli(*args):
    r = runner.invoke(app, ["extract", *map(str, args)])
    return r.exit_code, r.output.strip()


def test_fail_fast_on_bad_input(tmp_path, tiny_data):
    code, out = _cli("--data-root", tmp_path / "missing", "--store", tmp_path / "a.zarr", *TINY)
    assert code == 1 and "data root does not exist" in out and out.count("\n") == 0
    (tmp_path / "empty").mkdir()
    code, out = _cli("--data-root", tmp_path / "empty", "--store", tmp_path / "a.zarr", *TINY)
    assert code == 1 and "no MSRVTT_data.json" in out
    (tmp_path / "file").write_text("x")
    code, out = _cli("--data-root", tiny_data, "--store", tmp_path / "file" / "a.zarr", *TINY)
    assert code == 1 and "cannot" in out and str(tmp_path / "file") in out
    other = tmp_path / "other.zarr"
    create_synthetic_store(other, 6, 1)
    code, out = _cli("--data-root", tiny_data, "--store", other, *TINY)
    assert code == 1 and "dataset 'synthetic', not 'msrvtt'" in out
    import zarr
    zarr.open_group(other, mode="r+").attrs["vtr_schema_version"] = 99
    code, out = _cli("--data-root", tiny_data, "--store", other, *TINY)
    assert code == 1 and "schema version 99" in out and str(other) in out
    import shutil
    from pathlib import Path
    v1 = tmp_path / "v1.zarr"  # a store of the previous schema names the upgrade command
    shutil.copytree(Path(__file__).parents[1] / "storage" / "data" / "v1_store.zarr", v1)
    code, out = _cli("--data-root", tiny_data, "--store", v1, *TINY)
    assert code == 1 and f"vtr store upgrade {v1}" in out and out.count("\n") == 0
    code, out = _cli("--data-root", tiny_data, "--store", tmp_path / "b.zarr", "--ast-size", "tiny")
    assert code == 1 and "--clip-weights" in out and "--random-init" in out
    assert not (tmp_path / "b.zarr").exists()
    code, out = _cli("--data-root", tiny_data, "--store", tmp_path / "c.zarr", "--steps", "probe,bogus", *TINY)
    assert code == 2 and "bogus" in out


def test_one_config_object_is_the_flows_parameter_and_the_cli_flags():
    from flows.extract import extract_dataset

    for fl in (extract_msrvtt, extract_dataset):
        schema = fl.parameters.model_dump()
        assert schema["properties"]["config"]["$ref"].endswith("/ExtractConfig")
        assert schema["definitions"]["ExtractConfig"]["properties"]["frame_batch_size"]["default"] == 64
        assert not set(schema["properties"]) & set(ExtractConfig.model_fields)  # no option twice
    import typer.main

    # the command's own options (its rendered help cuts long names to the terminal's width)
    cmd = typer.main.get_command(app).commands["extract"]
    opts = {o for p in cmd.params for o in p.opts + p.secondary_opts}
    flags = {"--" + name.replace("_", "-") for name in ExtractConfig.model_fields if name != "storage_options"}
    assert flags - opts == set()
