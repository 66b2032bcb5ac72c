"""Everything a run can know before the first video is probed is checked first: weights
(fully loaded), the store's writability, its metadata, the annotations. Each refusal is
one line naming the file, and nothing is probed. Also: a run without the crawl step, and
whole-store steps that the data does not allow (a warning, not a failed flow)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from extractors.annotations import read_msrvtt
from flows.config import ExtractConfig
from flows.errors import ExtractError
from flows.extract import extract_msrvtt
from flows.run import store_layout as _layout
from storage import DONE, FAILED, MISSING, create_store, open_group, store_info
from vtr.cli import app

from .conftest import vtr_cmd, vtr_env

runner = CliRunner()
TINY = dict(random_init=True, ast_size="tiny", crawl_retries=0, workers=1)


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, text
    assert "Traceback" not in text, text
    return lines[0]


# --- D2: weights fully loaded before anything is probed ---------------------------------------
def _text(p: Path) -> Path:
    p.write_text("these are not weights\n" * 10)
    return p


def _truncated_pt(p: Path) -> Path:
    torch.save({"w": torch.zeros(64, 64)}, p)
    p.write_bytes(p.read_bytes()[:300])
    return p


def _wrong_arch(p: Path) -> Path:
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(4)}, p)
    return p


def _fake_safetensors(p: Path) -> Path:
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    return p


@pytest.mark.parametrize("make, name", [(_text, "clip.pt"), (_truncated_pt, "clip.pt"),
                                        (_wrong_arch, "clip.pt"), (_fake_safetensors, "clip.safetensors")])
def test_bad_clip_weights_are_refused_before_any_probe(tmp_path, tiny_data, make, name):
    weights = make(tmp_path / name)
    store = tmp_path / "s.zarr"
    cfg = ExtractConfig(clip_weights=str(weights), steps=["probe", "frames"], workers=1)
    with pytest.raises(ExtractError) as e:
        extract_msrvtt(data_root=str(tiny_data), store=str(store), config=cfg)
    msg = str(e.value)
    assert msg.startswith(f"{weights}: ") and "\n" not in msg
    assert not store.exists() and not Path(f"{store}.lock").exists()  # nothing created, nothing probed


def test_bad_weights_from_the_cli_are_one_line_and_exit_1(tmp_path, tiny_data):
    weights = _text(tmp_path / "clip.pt")
    r = runner.invoke(app, ["extract", "--data-root", str(tiny_data), "--store", str(tmp_path / "s.zarr"),
                            "--clip-weights", str(weights), "--steps", "probe,frames"])
    assert r.exit_code == 1
    assert _one_line(r.stderr).startswith(f"error: {weights}: ")


def test_ast_weights_with_random_init_are_refused_up_front(tmp_path, tiny_data):
    weights = _wrong_arch(tmp_path / "ast.pth")
    cfg = ExtractConfig(random_init=True, ast_weights=str(weights), steps=["probe", "audio"], workers=1)
    with pytest.raises(ExtractError, match=f"^{weights}: AST weights and --random-init given together"):
        extract_msrvtt(data_root=str(tiny_data), store=str(tmp_path / "s.zarr"), config=cfg)
    assert not (tmp_path / "s.zarr").exists()


# --- D3: a read-only store ----------------------------------------------------------------------
def _immutable(path: Path, on: bool) -> bool:
    return subprocess.run(["chattr", "-R", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


def test_read_only_store_is_refused_before_any_step(tmp_path, tiny_data):
    cfg = ExtractConfig(**TINY, steps=["probe", "frames"])
    m = read_msrvtt(tiny_data)
    store = tmp_path / "s.zarr"
    create_store(str(store), layout=_layout(m, cfg), **m.store_kwargs())
    if os.geteuid() != 0:
        os.chmod(store, 0o555)
    elif not _immutable(store, True):
        pytest.skip("running as root and chattr +i is not allowed here")
    try:
        with pytest.raises(ExtractError, match=f"^{store}: the store is not writable \\("):
            extract_msrvtt(data_root=str(tiny_data), store=str(store), config=cfg)
    finally:
        _immutable(store, False) if os.geteuid() == 0 else os.chmod(store, 0o755)
    assert (np.asarray(open_group(str(store), mode="r")["probe_state"][:]) == MISSING).all()
    assert not Path(f"{store}.lock").exists()  # released on the way out


# --- D7: annotation inconsistencies before any probe ---------------------------------------------
def _copy_with_duplicate(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    data = json.loads((dst / "MSRVTT_data.json").read_text())
    data["videos"].append({**data["videos"][0], "url": "http://127.0.0.1:9/other.m4a"})
    (dst / "MSRVTT_data.json").write_text(json.dumps(data))
    return dst


def test_inconsistent_annotations_warn_or_with_strict_refuse(tmp_path, tiny_data):
    root = _copy_with_duplicate(tiny_data, tmp_path / "data")
    store = tmp_path / "s.zarr"
    with pytest.raises(ExtractError, match=r"MSRVTT_data.json: video\(s\) listed twice .*: video0 \(--strict\)"):
        extract_msrvtt(data_root=str(root), store=str(store), config=ExtractConfig(**TINY, strict=True,
                                                                                   steps=["probe"]))
    assert not store.exists()
    res = extract_msrvtt(data_root=str(root), store=str(store), config=ExtractConfig(**TINY, steps=["probe"]))
    assert len(res["warnings"]) == 1 and "listed twice" in res["warnings"][0] and "video0" in res["warnings"][0]


# --- D6: a truncated zarr.json --------------------------------------------------------------------
@pytest.fixture(scope="module")
def corrupt_store(tmp_path_factory, tiny_data) -> Path:
    m = read_msrvtt(tiny_data)
    store = tmp_path_factory.mktemp("corrupt") / "s.zarr"
    create_store(str(store), layout=_layout(m, ExtractConfig(**TINY)), **m.store_kwargs())
    meta = store / "zarr.json"
    meta.write_bytes(meta.read_bytes()[: meta.stat().st_size // 2])
    return store


@pytest.mark.parametrize("args", [["store", "info", "{s}"], ["store", "check", "{s}"],
                                  ["store", "export-h5", "{s}", "{tmp}/out.h5"],
                                  ["train", "--store", "{s}", "--head", "meanpool", "--out", "{tmp}/run"],
                                  ["extract", "--data-root", "{data}", "--store", "{s}", "--random-init",
                                   "--ast-size", "tiny", "--steps", "probe"]])
def test_truncated_zarr_json_is_one_line_naming_the_file(corrupt_store, tiny_data, tmp_path, args):
    argv = [a.format(s=corrupt_store, tmp=tmp_path, data=tiny_data) for a in args]
    r = runner.invoke(app, argv)
    assert r.exit_code == 1, r.output
    line = _one_line(r.stderr)
    assert line.startswith(f"error: {corrupt_store}/zarr.json: corrupt Zarr metadata, not valid JSON"), line


# --- D11: no crawl step -------------------------------------------------------------------------
def test_audio_without_the_crawl_step_uses_the_videos_own_track(tmp_path, tiny_data):
    store = str(tmp_path / "s.zarr")
    res = extract_msrvtt(data_root=str(tiny_data), store=store,
                         config=ExtractConfig(**TINY, steps=["probe", "audio"]))
    g = open_group(store, mode="r")
    ids = [str(v) for v in g["video"][:]]
    own = np.asarray(g["source_has_audio"][:]) & (np.asarray(g["probe_state"][:]) == DONE)
    audio = np.asarray(g["audio_state"][:])
    assert own.sum() >= 3  # the sample's videos with a track (video2 is corrupt, 1 and 5 silent)
    assert (audio[own] == DONE).all() and np.asarray(g["has_audio"][:])[own].all()
    silent = [ids.index("video1"), ids.index("video5")]
    assert (audio[silent] == FAILED).all()
    errors = [str(e) for e in np.asarray(g["audio_error"][:])[silent]]
    assert all("the crawl step is not done" in e for e in errors), errors
    assert res["steps"]["audio"]["done"] == int(own.sum())


# --- item 3: whole-store steps degrade -----------------------------------------------------------
def _few_captions(root: Path) -> Path:
    """One caption per video (8 training captions, no phrase reaches the default min count)
    and an empty test list (no video to make style rewrites of)."""
    data = json.loads((root / "MSRVTT_data.json").read_text())
    seen, keep = set(), []
    for s in data["sentences"]:
        if s["video_id"] not in seen:
            seen.add(s["video_id"])
            keep.append(s)
    data["sentences"] = keep
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    test = [ln for ln in (root / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()]
    ids = [ln.split(",")[2] for ln in test[1:]]
    (root / "MSRVTT_JSFUSION_test.csv").write_text(test[0] + "\n")
    for name in ("MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv"):
        (root / name).write_text((root / name).read_text() + "".join(f"{v}\n" for v in ids))
    return root


def test_eight_video_folder_with_defaults_exits_0_and_records_why_tags_and_style_did_not_run(tmp_path):
    env = vtr_env()
    data = tmp_path / "d8"
    subprocess.run(vtr_cmd("sample-data", data, "--n-videos", "8"), env=env, check=True, capture_output=True)
    _few_captions(data)
    store = tmp_path / "s.zarr"
    r = subprocess.run(vtr_cmd("extract", "--data-root", data, "--store", store, "--random-init",
                               "--ast-size", "tiny"), env=env, capture_output=True, text=True, timeout=540)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    summary = json.loads(r.stdout[r.stdout.index("{"):r.stdout.rindex("}") + 1])
    assert summary["steps"]["tags"]["warning"].startswith("no phrase occurs in at least 5 of the")
    assert summary["steps"]["style"]["warning"] == "no caption of a video in split(s) test to rewrite"
    assert any(w.startswith("tags: no phrase") for w in summary["warnings"])
    assert summary["steps"]["frames"]["done"] == 8 and summary["steps"]["text"]["done"] == 8
    info = store_info(str(store))
    assert any(w.startswith("tags: no phrase occurs") for w in info["warnings"])
    assert any(w.startswith("style: no caption") for w in info["warnings"])
    shown = subprocess.run(vtr_cmd("store", "info", store), env=env, capture_output=True, text=True).stdout
    assert "WARNING: tags: no phrase occurs in at least 5" in shown
