"""Every registered dataset's sample through `vtr extract --dataset NAME` (the
`extract-dataset` flow, in process): counts per split, paragraph text, layout sizes, audio
sources; then `vtr train` / `vtr eval` on the paragraph and multi-sentence stores; bad input.

Prefect runs are slow on a loaded machine: each dataset is extracted once per module, with
only the steps these checks read.
"""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from extractors.datasets import get_dataset, list_datasets
from extractors.sample_server import start_sample_server
from storage import DONE, FAILED, as_str, layout_of, open_store, read_attrs
from vtr.cli import app

from .conftest import TINY

runner = CliRunner()
STEPS = ["--steps", "probe,crawl,frames,audio,text"]
# (videos, captions) per split of each sample; training holds validation videos out where
# the release has no validation split (one video of these few)
COUNTS = {
    "msrvtt": {"train": (5, 25), "val": (1, 5), "test": (2, 10)},
    "msvd": {"train": (4, 15), "val": (2, 9), "test": (2, 7)},
    "lsmdc": {"train": (4, 8), "val": (2, 2), "test": (2, 2)},
    "didemo": {"train": (4, 4), "val": (2, 2), "test": (2, 2)},
    "activitynet": {"train": (4, 4), "val": (1, 1), "test": (3, 3)},
    "vatex": {"train": (5, 25), "val": (1, 5), "test": (2, 10)},
    "charades": {"train": (5, 5), "val": (1, 1), "test": (2, 2)},
}
SIZES = {"didemo": (64, 64), "activitynet": (64, 64)}  # (frames, words); the rest 12 / 32
CRAWLED = ("msvd", "vatex", "activitynet")  # silent clips' audio crawled by YouTube id
MISSING = ("lsmdc", "0001_Sample_Film_One")  # this dataset's first clip of this film loses its file


def cli(*args):
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output.strip()


def last_line(*args):
    """Exit code and the last output line (Prefect's own log of a failed flow run, which
    the Prefect/exit handling decides about, may come before it)."""
    code, out = cli(*args)
    return code, out.splitlines()[-1]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, served_sample):
    """``get(name) -> (data root, store, exit code, output)``, each extracted once."""
    top = tmp_path_factory.mktemp("datasets")
    done, servers = {}, []

    def get(name: str):
        if name in done:
            return done[name]
        root = top / name
        options = []
        if name == "msrvtt":
            served_sample(root, n_videos=8, seed=8)
        else:
            code, out = cli("sample-data", "--dataset", name, root)
            assert code == 0 and f"vtr extract --dataset {name} --data-root {root}" in out, out
        if name in CRAWLED:  # the stand-in originals, served on loopback
            servers.append(start_sample_server(root))
            options = ["--dataset-options", f"youtube_url={servers[-1].url}/youtube/{{id}}.m4a"]
        if name == MISSING[0]:
            next((root / "videos" / MISSING[1]).iterdir()).unlink()
        store = top / f"{name}.zarr"
        code, out = cli("extract", "--dataset", name, "--data-root", root, "--store", store, *TINY, *STEPS,
                        *options)
        done[name] = root, str(store), code, out
        return done[name]

    yield get
    for s in servers:
        s.stop()


def test_registry_lists_the_seven():
    assert list_datasets() == sorted(COUNTS)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_sample_extracts_with_its_counts_sizes_and_audio(extracted, name):
    root, store, code, out = extracted(name)
    assert code == 0, out
    ds = open_store(store)
    split, cv = as_str(ds.split.values), ds.caption_video.values
    for s, (n_v, n_c) in COUNTS[name].items():
        assert ((split == s).sum(), (split[cv] == s).sum()) == (n_v, n_c), s
    n_frames, n_words = SIZES.get(name, (12, 32))
    lay = layout_of(store)
    assert (lay.n_frames, lay.n_words) == (n_frames, n_words)
    assert ds.frame_features.shape[1] == n_frames and ds.caption_tokens.shape[1] == n_words
    attrs = read_attrs(store)
    assert attrs["protocol"] == get_dataset(name).protocol
    assert attrs["provenance"]["text"]["preprocessing"]["context_length"] == n_words
    ok = ds.frames_state.values == DONE
    assert ok.sum() == len(split) - (name == MISSING[0])
    assert (ds.text_state.values == DONE).all()
    # audio: own track, crawled by the YouTube id, or none (DiDeMo's silent Flickr files)
    src, has = as_str(ds.audio_source.values), ds.has_audio.values
    probed_audio = ds.source_has_audio.values
    assert (src[probed_audio & ok] == "original").all()
    silent = ~probed_audio & ok
    if name in CRAWLED:
        assert silent.any() and (src[silent] == "crawled").all() and has[silent].all()
        assert (as_str(ds.url.values)[silent] != "").all()
    elif name == "didemo":
        assert silent.any() and (src[silent] == "none").all() and not has[silent].any()
    elif name != "msrvtt":
        assert not silent.any()


def test_paragraphs_are_the_release_joins(extracted):
    root, store, code, out = extracted("activitynet")
    assert code == 0, out
    ann = json.loads((root / "val_1.json").read_text())
    ds = open_store(store)
    text = dict(zip(as_str(ds.video.values)[ds.caption_video.values], as_str(ds.caption_text.values)))
    for key, entry in ann.items():
        assert text[key[2:]] == " ".join(entry["sentences"])  # leading spaces kept: double spaces
    assert any("  " in t for t in text.values())
    root, store, code, out = extracted("didemo")
    assert code == 0, out
    moments = json.loads((root / "test_data.json").read_text())
    ds = open_store(store)
    text = dict(zip(as_str(ds.video.values)[ds.caption_video.values], as_str(ds.caption_text.values)))
    for name in {m["video"] for m in moments}:
        assert text[name] == " ".join(m["description"] for m in moments if m["video"] == name)
    assert read_attrs(store)["max_seconds"] == 31.0
    assert read_attrs(store)["provenance"]["frames"]["max_seconds"] == 31.0


def test_listed_video_without_a_file_fails_alone(extracted):
    root, store, code, out = extracted(MISSING[0])
    assert code == 0, out
    ds = open_store(store)
    ids = as_str(ds.video.values)
    gone = [i for i, p in enumerate(as_str(ds.video_path.values)) if not (root / p).exists()]
    assert len(gone) == 1 and ids[gone[0]].startswith(MISSING[1])
    assert ds.probe_state.values[gone[0]] == FAILED
    assert "no such file" in str(ds.probe_error.values[gone[0]]) or "No such file" in str(ds.probe_error.values[gone[0]])
    assert ds.frames_state.values[gone[0]] == FAILED
    others = np.arange(len(ids)) != gone[0]
    assert (ds.frames_state.values[others] == DONE).all()


@pytest.mark.parametrize("name,protocol", [("didemo", "paragraph"), ("msvd", "multi")])
def test_train_and_eval_on_the_extracted_store(extracted, tmp_path, name, protocol):
    root, store, code, out = extracted(name)
    assert code == 0, out
    run = tmp_path / "run"
    code, out = cli("train", "--store", store, "--head", "meanpool", "--out", run, "--epochs", 2,
                    "--batch-size", 2, "--no-progress", "--device", "cpu")
    assert code == 0, out
    code, out = cli("eval", "--store", store, "--run", run)
    assert code == 0, out
    assert out.splitlines()[1].startswith(f"protocol: {protocol}")
    first = "multi" if protocol == "multi" else "single"
    assert out.splitlines()[3].startswith(f"{first:<10}t2v")
    rep = json.loads((run / "eval_test.json").read_text())
    n_v, n_c = COUNTS[name]["test"]
    assert rep["protocol"] == protocol and (rep["n_videos"], rep["n_captions"]) == (n_v, n_c)


def test_bad_input_is_one_line(tmp_path):
    code, out = cli("extract", "--dataset", "nope", "--data-root", tmp_path, "--store", tmp_path / "a.zarr", *TINY)
    assert code == 1 and out.endswith(f"error: unknown dataset 'nope' (known: {', '.join(list_datasets())})")
    code, out = cli("sample-data", "--dataset", "nope", tmp_path / "x")
    assert code == 1 and "known: activitynet, charades" in out


def test_bad_annotations_are_one_line(tmp_path):
    root = get_dataset("charades").write_sample(tmp_path / "charades", seed=0)
    (root / "Charades_v1_test.csv").rename(root / "test.csv")
    code, out = last_line("extract", "--dataset", "charades", "--data-root", root, "--store", tmp_path / "a.zarr",
                          *TINY)
    assert code == 1 and out == f"error: {root}: no Charades_v1_test.csv (the Charades annotation file expected there)"
    (root / "test.csv").rename(root / "Charades_v1_test.csv")
    train = root / "Charades_v1_train.csv"
    with open(train, newline="") as f:
        rows = list(csv.reader(f))
    with open(train, "w", newline="") as f:
        csv.writer(f).writerows(rows[:3])
        f.write('ZZ99Z,S1,Hall,6,7,Yes,"a script never closed\n')  # the file cannot be parsed
    code, out = last_line("extract", "--dataset", "charades", "--data-root", root, "--store", tmp_path / "b.zarr",
                          *TINY)
    assert code == 1 and out.startswith(f"error: {train}: line ") and "malformed CSV" in out, out
    code, out = last_line("extract", "--dataset", "charades", "--data-root", root, "--store", tmp_path / "c.zarr", *TINY,
                    "--dataset-options", "youtube_url=x")
    assert code == 1 and "has no option 'youtube_url' (options: n_val, seed, video_dir)" in out
    assert not any((tmp_path / s).exists() for s in ("a.zarr", "b.zarr", "c.zarr"))


def test_context_of_64_keeps_sot_62_tokens_and_eot():
    from extractors.clip_encoder import create_clip_encoder

    enc = create_clip_encoder(random_init=True, device="cpu", context_length=64)
    tok = enc.tokenize(["word " * 100, "a short one"])
    assert tok.shape == (2, 64)
    sot, eot = int(tok[0, 0]), int(tok[0].max())
    assert tok[0, -1] == eot and (tok[0, 1:63] != eot).all() and tok[1, 0] == sot
    out = enc.encode_tokens(tok)
    assert out["caption_mask"][0].all() and out["caption_mask"][1].sum() == 5  # SOT a short one EOT
