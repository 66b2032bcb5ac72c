"""`vtr store check --repair` then `vtr extract` restores a damaged store to what an
uninterrupted run makes: a lost chunk and a corrupt one are redone, nothing else is."""
import os
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.config import ExtractConfig
from flows.extract import extract_msrvtt
from storage import check_store, open_group
from vtr.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()
CONFIG = ExtractConfig(random_init=True, ast_size="tiny", crawl_retries=0, workers=1, video_chunk=2,
                       steps=["probe", "crawl", "compress", "frames", "audio", "text"])


def test_repair_then_extract_equals_an_uninterrupted_run(tiny_data, tmp_path):
    full = str(tmp_path / "full.zarr")
    extract_msrvtt(data_root=str(tiny_data), store=full, config=CONFIG)
    store = str(tmp_path / "damaged.zarr")
    shutil.copytree(full, store)
    os.remove(os.path.join(store, "frame_features", "c", "0", "0", "0"))  # videos 0, 1
    fn = os.path.join(store, "caption_embedding", "c", "0", "0")
    data = bytearray(open(fn, "rb").read())
    data[7] ^= 0x10
    open(fn, "wb").write(bytes(data))
    problems = check_store(store)
    assert len(problems) == 3, problems  # two chunks, and the content checks skipped
    r = runner.invoke(app, ["store", "check", "--repair", store])
    assert r.exit_code == 0 and r.output.count("repaired:") == 2, r.output

    result = extract_msrvtt(data_root=str(tiny_data), store=store, config=CONFIG)
    assert result["steps"]["frames"]["done"] == 2 and result["steps"]["audio"]["done"] == 0
    assert result["steps"]["text"]["done"] > 0
    assert check_store(store) == []
    a, b = open_group(full, mode="r"), open_group(store, mode="r")
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    for name in a.array_keys():
        x, y = np.asarray(a[name][:]), np.asarray(b[name][:])
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), atol=2e-3, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)
