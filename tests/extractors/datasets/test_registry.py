import pytest

from extractors.annotations import AnnotationError, Manifest, read_msrvtt
from extractors.datasets import DATASETS, get_dataset, list_datasets, read_dataset, register_dataset
from extractors.sample_data import make_sample_dataset

ALL = ["activitynet", "charades", "didemo", "lsmdc", "msrvtt", "msvd", "vatex"]


def test_all_seven_registered():
    assert list_datasets() == ALL and sorted(DATASETS) == ALL
    assert all(get_dataset(n).name == n for n in ALL)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(AnnotationError) as e:
        get_dataset("kinetics")
    assert str(e.value) == f"unknown dataset 'kinetics' (known: {', '.join(ALL)})"
    with pytest.raises(AnnotationError, match="unknown dataset 'msr-vtt'"):
        read_dataset("msr-vtt", "/nonexistent")


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="'msvd' registered twice"):
        register_dataset("msvd", title="x", write_sample=make_sample_dataset, protocol="multi", audio="own",
                         evaluated="x")(read_msrvtt)
    assert DATASETS["msvd"].title == "MSVD"


@pytest.mark.parametrize("name,frames,words,protocol,audio", [
    ("msrvtt", 12, 32, "single", "url"),
    ("msvd", 12, 32, "multi", "youtube"),
    ("vatex", 12, 32, "multi", "youtube"),
    ("lsmdc", 12, 32, "single", "own"),
    ("charades", 12, 32, "single", "own"),
    ("didemo", 64, 64, "paragraph", "own"),
    ("activitynet", 64, 64, "paragraph", "youtube"),
])
def test_spec_facts(name, frames, words, protocol, audio):
    spec = get_dataset(name)
    assert (spec.n_frames, spec.n_words, spec.protocol, spec.audio) == (frames, words, protocol, audio)
    assert spec.evaluated and spec.title


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        get_dataset("didemo").n_frames = 12


def test_msrvtt_sample_reads_through_the_registry(tmp_path):
    spec = get_dataset("msrvtt")
    m = spec.read(spec.write_sample(tmp_path / "msrvtt", n_videos=4, seed=0))
    assert isinstance(m, Manifest) and m.dataset == "msrvtt"
    assert (m.splits.count("train"), m.splits.count("val"), m.splits.count("test")) == (2, 1, 1)
    assert len(m.caption_text) == 4 * 5
    assert all((tmp_path / "msrvtt" / p).is_file() for p in m.video_paths)


def test_reader_options_are_declared_and_checked():
    assert get_dataset("msvd").options == ("n_val", "seed", "video_dir", "youtube_url")
    assert get_dataset("vatex").options == ("n_val", "seed", "video_dir", "youtube_url")
    assert get_dataset("msrvtt").options == ("train_list", "n_val", "seed", "test_csv", "strict", "video_dir")
    with pytest.raises(AnnotationError) as e:
        read_dataset("msvd", "/nonexistent", train_list="7k")
    assert str(e.value) == "dataset 'msvd' has no option 'train_list' (options: n_val, seed, video_dir, youtube_url)"


def test_every_reader_takes_n_val_and_video_dir():
    assert all({"n_val", "video_dir"} <= set(get_dataset(n).options) for n in ALL)


def test_only_didemo_caps_the_seconds_read():
    assert {n: get_dataset(n).max_seconds for n in ALL if get_dataset(n).max_seconds} == {"didemo": 31.0}


@pytest.mark.parametrize("name", ["didemo", "activitynet", "msvd"])
def test_read_dataset_gives_the_manifest_the_specs_protocol_sizes_and_window(sample_root, name):
    """Written by hand from the specs above: the readers themselves return the defaults."""
    want = {"didemo": ("paragraph", 64, 64, 31.0), "activitynet": ("paragraph", 64, 64, None),
            "msvd": ("multi", 12, 32, None)}[name]
    m = read_dataset(name, sample_root(name))
    assert (m.protocol, m.n_frames, m.n_words, m.max_seconds) == want
    raw = get_dataset(name).read(sample_root(name))
    assert (raw.protocol, raw.n_frames, raw.n_words, raw.max_seconds) == ("single", None, None, None)


def test_a_reader_without_options_says_none():
    from extractors.datasets.registry import DATASETS

    def read_bare(root):
        raise AssertionError("not reached")
    register_dataset("bare-test", title="t", write_sample=make_sample_dataset, protocol="single", audio="own",
                     evaluated="x")(read_bare)
    try:
        with pytest.raises(AnnotationError) as e:
            read_dataset("bare-test", "/nonexistent", n_val=3)
        assert str(e.value) == "dataset 'bare-test' has no option 'n_val' (options: none)"
    finally:
        del DATASETS["bare-test"]
