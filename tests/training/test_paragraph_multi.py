"""Paragraph-sized stores (64 frames, 64 words) train with every head, and multi-sentence
stores (MSVD, VATEX) are scored and reported by CLIP4Clip's multi-sentence protocol."""
import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import vtr.commands.train
from storage import layout_of, open_group
from storage.store import consolidate
from training.ablate import VARIANTS
from training.metrics import format_report, retrieval_metrics, retrieval_report
from training.planted_waver import write_waver_store

from .test_metrics import clip4clip_multi

TINY = ["--set", "n_heads=4", "--set", "temporal_layers=1", "--set", "resampler_layers=1",
        "--set", "fusion_layers=1", "--set", "gate_hidden=16"]


def run(app, *args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def app():
    app = typer.Typer(pretty_exceptions_enable=False)
    vtr.commands.train.register(app)
    return app


def set_protocol(store: str, protocol: str) -> None:
    """What the extraction flow records for MSVD/VATEX stores (planted stores are single)."""
    open_group(store, mode="r+").attrs["protocol"] = protocol
    consolidate(store)


def test_every_head_trains_on_64_frames_and_64_words(app, tmp_path):
    store = str(tmp_path / "paragraph.zarr")
    write_waver_store(store, 24, 1, audio_share=0.25, n_frames=64, n_words=64, no_audio_fraction=0.2,
                      splits=(16, 2, 6), seed=1)
    set_protocol(store, "paragraph")
    assert (layout_of(store).n_frames, layout_of(store).n_words) == (64, 64)
    r = run(app, "ablate", "--store", store, "--out", tmp_path / "ab", "--epochs", 1, "--batch-size", 8,
            "--audio-tokens", "pool-tokens-4", "--no-progress", "--device", "cpu", *TINY)
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "ab" / "ablation.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == list(VARIANTS)
    for variant in VARIANTS:
        cfg = json.loads((tmp_path / "ab" / "runs" / variant.replace("/", "-") / "config.json").read_text())["head_config"]
        assert cfg.get("max_frames", 64) == 64  # sized from the store, not a built-in 12
    r = run(app, "eval", "--store", store, "--run", tmp_path / "ab" / "runs" / "avigate")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[1].startswith("protocol: paragraph")
    rep = json.loads((tmp_path / "ab" / "runs" / "avigate" / "eval_test.json").read_text())
    assert rep["protocol"] == "paragraph" and rep["n_videos"] == rep["n_captions"] == 6


def test_multi_sentence_store_is_reported_by_its_protocol(app, tmp_path):
    store = str(tmp_path / "multi.zarr")
    write_waver_store(store, 20, 4, splits=(12, 2, 6), seed=2)
    set_protocol(store, "multi")
    out = tmp_path / "run"
    r = run(app, "train", "--store", store, "--head", "avigate", "--out", out, "--epochs", 2, "--batch-size", 8,
            "--audio-tokens", "pool-tokens-4", "--no-progress", "--device", "cpu", "--set", "n_heads=4",
            "--set", "resampler_layers=1", "--set", "fusion_layers=1")
    assert r.exit_code == 0, r.output
    assert "protocol: multi (CLIP4Clip's multi-sentence" in r.output
    r = run(app, "eval", "--store", store, "--run", out)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[1].startswith("protocol: multi") and lines[3].startswith("multi     t2v") \
        and lines[4].startswith("multi     v2t") and lines[5].startswith("single    t2v")
    rep = json.loads((out / "eval_test.json").read_text())
    assert rep["protocol"] == "multi" and (rep["n_videos"], rep["n_captions"]) == (6, 24)


def test_multi_sentence_median_is_clip4clips_on_an_even_count():
    rng = np.random.default_rng(4)
    n_v = 30
    cv = rng.permutation(np.concatenate([np.arange(n_v), rng.integers(0, n_v, 40)]))  # 70 captions: even
    sim = rng.standard_normal((len(cv), n_v)) + 2.0 * np.eye(n_v)[cv] * rng.random((len(cv), 1))
    t2v, v2t = clip4clip_multi(sim, cv)
    ours = retrieval_metrics(sim, cv)
    assert ours == pytest.approx(t2v)
    ranks = np.sort(np.argsort(np.argsort(-sim, axis=1), axis=1)[np.arange(len(cv)), cv])
    assert ranks[34] != ranks[35] and ours["MdR"] == ranks[34] + 1  # the lower middle, not their mean
    assert retrieval_metrics(sim, cv, direction="v2t") == pytest.approx(v2t)


def test_report_puts_the_datasets_protocol_first():
    cv = np.repeat(np.arange(5), 2)
    sim = np.random.default_rng(0).standard_normal((10, 5))
    for protocol, first in (("single", "single"), ("paragraph", "single"), ("multi", "multi")):
        text = format_report(retrieval_report(sim, cv, np.arange(0, 10, 2), protocol=protocol), "t")
        assert text.splitlines()[1].startswith(f"protocol: {protocol}")
        assert text.splitlines()[3].startswith(f"{first:<10}t2v")
    with pytest.raises(ValueError, match="unknown protocol 'groups'"):
        retrieval_report(sim, cv, np.arange(0, 10, 2), protocol="groups")
