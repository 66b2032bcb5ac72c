"""CLIP initialisation: the releases' tensors land where they say, bad files fail in one
line naming the file, and `vtr train` picks clip or random as documented."""
import json

import pytest
import torch

from storage import provenance_record, set_provenance
from training.clip_init import clip_key_map, init_from_clip
from training.heads import create_head
from training.planted import write_planted_store
from training.runs import ConfigError

from .conftest import train_cli as run

TEXT_LAYERS = 4


def random_clip_state(width: int = 64, layers: int = TEXT_LAYERS, seed: int = 0) -> dict:
    """A small open_clip CLIP (the class ``create_model`` builds, at a test size) with
    every tensor random, so a copy is told from an untouched default (LayerNorms start
    at 1 and 0)."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(embed_dim=width, vision_cfg=dict(layers=1, width=32, patch_size=16, image_size=32, head_width=16),
                 text_cfg=dict(context_length=77, vocab_size=100, width=width, heads=4, layers=layers))
    return {k: torch.randn_like(v.float()) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    state = random_clip_state()
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def clip_store(tmp_path_factory, clip_file):
    """A planted store whose text provenance names the CLIP file and its sha256."""
    from storage import sha256_file

    path = str(tmp_path_factory.mktemp("stores") / "clip.zarr")
    write_planted_store(path, 40, 2, audio_share=0.5, splits=(28, 6, 6), seed=3)
    set_provenance(path, "text", provenance_record("open_clip tiny", clip_file[0], sha256_file(clip_file[0]), {}))
    return path


def test_avigate_copies_the_release_tensors(clip_file):
    _, state = clip_file
    torch.manual_seed(0)
    head = create_head("avigate", {"resampler_layers": 4, "fusion_layers": 3}, dim=64, audio_dim=32)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    names = init_from_clip(head, state)
    p = dict(head.named_parameters())
    assert len(names) == 12 * (4 + 3) + 1
    for i in range(4):
        torch.testing.assert_close(p[f"resampler.{i}.self_attn.in_proj_weight"],
                                   state[f"transformer.resblocks.{i}.attn.in_proj_weight"], rtol=0, atol=0)
        torch.testing.assert_close(p[f"resampler.{i}.mlp.2.bias"], state[f"transformer.resblocks.{i}.mlp.c_proj.bias"],
                                   rtol=0, atol=0)
    for i in range(3):
        torch.testing.assert_close(p[f"fusion.{i}.ln1.weight"], state[f"transformer.resblocks.{i}.ln_1.weight"],
                                   rtol=0, atol=0)
        torch.testing.assert_close(p[f"fusion.{i}.self_attn.out_proj.weight"],
                                   state[f"transformer.resblocks.{i}.attn.out_proj.weight"], rtol=0, atol=0)
        torch.testing.assert_close(p[f"fusion.{i}.mlp.0.weight"], state[f"transformer.resblocks.{i}.mlp.c_fc.weight"],
                                   rtol=0, atol=0)
    torch.testing.assert_close(p["frame_embedding"], state["positional_embedding"][:12], rtol=0, atol=0)
    # every tensor the map names was copied; nothing else moved (cross-attention, the
    # fusion FFN, gates, queries and the audio projection have no CLIP counterpart)
    for name, clip_key in clip_key_map(head).items():
        want = state[clip_key][:12] if name == "frame_embedding" else state[clip_key]
        assert torch.equal(p[name], want), name
    untouched = [k for k in before if k not in names]
    assert any(".cross_attn." in k for k in untouched) and "queries" in untouched
    for k in untouched:
        assert torch.equal(head.state_dict()[k], before[k]), k


def test_waver_seqtransf_and_positions(clip_file):
    _, state = clip_file
    head = create_head("waver", {"temporal_layers": 2, "n_heads": 4}, dim=64)
    names = init_from_clip(head, state)
    assert len(names) == 12 * 2 + 1
    p = dict(head.named_parameters())
    assert torch.equal(p["temporal.1.attn.in_proj_bias"], state["transformer.resblocks.1.attn.in_proj_bias"])
    assert torch.equal(p["temporal.0.ln2.bias"], state["transformer.resblocks.0.ln_2.bias"])
    assert torch.equal(p["temporal_embedding"], state["positional_embedding"][:12])
    assert init_from_clip(create_head("meanpool", dim=64), state) == []


def test_weights_that_do_not_fit_fail_before_copying(clip_file):
    _, state = clip_file
    head = create_head("avigate", {"resampler_layers": 4, "fusion_layers": 4}, dim=64, audio_dim=32)
    shallow = {k: v for k, v in state.items() if not k.startswith("transformer.resblocks.3.")}
    before = head.state_dict()["resampler.0.ln1.weight"].clone()
    with pytest.raises(ConfigError, match=r"CLIP text transformer: 3 layers.*transformer\.resblocks\.3\..* missing"):
        init_from_clip(head, shallow)
    assert torch.equal(head.state_dict()["resampler.0.ln1.weight"], before)  # nothing copied
    wide = create_head("avigate", {"resampler_layers": 1, "fusion_layers": 1}, dim=128, audio_dim=32)
    with pytest.raises(ConfigError, match=r"in_proj_weight \(192, 64\) vs resampler\.0\.self_attn"):
        init_from_clip(wide, state)


TINY = ("--epochs", 1, "--batch-size", 8, "--audio-tokens", "pool-tokens-4", "--no-progress", "--device", "cpu")


def test_recipe_run_logs_the_tensors_from_clip(clip_store, tmp_path):
    out = tmp_path / "run"
    r = run("train", "--store", clip_store, "--recipe", "avigate-msrvtt", "--out", out, *TINY,
            "--set", "n_heads=4", "--set", "gate_hidden=16")
    assert r.exit_code == 0, r.output
    assert "initialised 97 tensors from CLIP" in r.output  # 4 + 4 layers x 12, and the positions
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["init"]["from"] == "clip" and len(cfg["init"]["tensors"]) == 97
    assert cfg["head_config"]["audio"]["query_weight_decay"] == 0.2  # the recipe reached the head


def test_init_defaults_and_bad_files(clip_store, clip_file, tmp_path):
    base = ("train", "--store", clip_store, "--head", "waver", *TINY, "--set", "temporal_layers=1",
            "--set", "distill=none", "--set", "n_heads=4")
    r = run(*base, "--out", tmp_path / "random", "--init", "random")
    assert r.exit_code == 0 and "from CLIP" not in r.output and "note:" not in r.output, r.output
    # the recorded file changed: the default falls back to random with a notice, --init clip fails
    path, _ = clip_file
    saved = path.read_bytes()
    try:
        path.write_bytes(saved + b"x")
        r = run(*base, "--out", tmp_path / "auto")
        assert r.exit_code == 0, r.output
        notice = [line for line in r.output.splitlines() if line.startswith("note:")]
        assert len(notice) == 1 and "sha256 mismatch" in notice[0] and str(path) in notice[0]
        r = run(*base, "--out", tmp_path / "clip", "--init", "clip")
        assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
        assert r.output.startswith(f"error: {path}: --init clip: sha256 mismatch")
        path.unlink()
        r = run(*base, "--out", tmp_path / "gone", "--init", "clip")
        assert r.exit_code == 1 and r.output == f"error: {path}: --init clip: checkpoint file not found\n"
    finally:
        path.write_bytes(saved)


def test_random_init_store(tmp_path):
    store = str(tmp_path / "random.zarr")
    write_planted_store(store, 30, 2, splits=(20, 5, 5), seed=1)
    set_provenance(store, "text", provenance_record("open_clip tiny", None, None, {}))
    r = run("train", "--store", store, "--head", "meanpool", "--out", tmp_path / "a", *TINY)
    assert r.exit_code == 0 and "were not made with a CLIP weights file" in r.output, r.output
    r = run("train", "--store", store, "--head", "meanpool", "--out", tmp_path / "b", *TINY, "--init", "clip")
    assert r.exit_code == 1 and r.output.startswith("error: --init clip:") and r.output.count("\n") == 1, r.output
    r = run("train", "--store", store, "--head", "meanpool", "--out", tmp_path / "c", *TINY, "--init", "maybe")
    assert r.exit_code == 1 and "--init must be clip or random" in r.output


# one layer of each stack, every tensor the releases copy, written out by hand (not read
# from clip_key_map): AVIGATE's resampler and fusion self-attention blocks, WAVER's seqTransf
_BY_HAND = {
    "{attn}.in_proj_weight": "attn.in_proj_weight", "{attn}.in_proj_bias": "attn.in_proj_bias",
    "{attn}.out_proj.weight": "attn.out_proj.weight", "{attn}.out_proj.bias": "attn.out_proj.bias",
    "ln1.weight": "ln_1.weight", "ln1.bias": "ln_1.bias", "ln2.weight": "ln_2.weight", "ln2.bias": "ln_2.bias",
    "mlp.0.weight": "mlp.c_fc.weight", "mlp.0.bias": "mlp.c_fc.bias",
    "mlp.2.weight": "mlp.c_proj.weight", "mlp.2.bias": "mlp.c_proj.bias",
}


@pytest.mark.parametrize("name,stack,attn,options", [
    ("avigate", "resampler", "self_attn", {"resampler_layers": 2, "fusion_layers": 2}),
    ("avigate", "fusion", "self_attn", {"resampler_layers": 2, "fusion_layers": 2}),
    ("waver", "temporal", "attn", {"temporal_layers": 2, "n_heads": 4}),
])
def test_every_clip_tensor_of_a_layer_lands_by_name(clip_file, name, stack, attn, options):
    path, _ = clip_file
    on_disk = torch.load(path, weights_only=True)  # the file, not the fixture's dict
    head = create_head(name, options, dim=64, **({"audio_dim": 32} if name == "avigate" else {}))
    init_from_clip(head, on_disk)
    p = dict(head.named_parameters())
    for ours, theirs in _BY_HAND.items():
        got, want = p[f"{stack}.1.{ours.format(attn=attn)}"], on_disk[f"transformer.resblocks.1.{theirs}"]
        assert torch.equal(got, want), f"{stack}.1.{ours} is not CLIP's {theirs}"
    assert sum(k.startswith(f"{stack}.1.") for k in clip_key_map(head)) == len(_BY_HAND)


def test_a_layer_whose_structure_changed_fails_by_name():
    head = create_head("avigate", {"resampler_layers": 1, "fusion_layers": 1}, dim=64, audio_dim=32)
    head.resampler[0].ln1 = torch.nn.Identity()  # a layer without the LayerNorm the map names
    with pytest.raises(ConfigError, match=r"^head 'avigate': no parameter resampler\.0\.ln1\.weight to initialise "
                                          r"from CLIP \(the key map is out of date\)$"):
        clip_key_map(head)
    bare = torch.nn.Module()  # not a registered head: no name
    bare.resampler = torch.nn.ModuleList([torch.nn.Module()])
    with pytest.raises(ConfigError, match=r"^head '\?': no parameter resampler\.0\.self_attn\.in_proj_weight "):
        clip_key_map(bare)


@pytest.mark.parametrize("shape", [(8, 64), (77, 32), (77 * 64,)])
def test_positions_that_cannot_fill_the_frame_slots(clip_file, shape):
    _, state = clip_file
    head = create_head("avigate", {"resampler_layers": 1, "fusion_layers": 1}, dim=64, audio_dim=32)
    bad = {**state, "positional_embedding": torch.zeros(shape)}
    with pytest.raises(ConfigError, match=r"1 problem\(s\), e\.g\. positional_embedding \(.*\) cannot fill "
                                          r"frame_embedding \(12, 64\)$"):
        init_from_clip(head, bad)


def test_positions_exactly_as_many_as_the_frame_slots_fit(clip_file):
    _, state = clip_file
    head = create_head("avigate", {"resampler_layers": 1, "fusion_layers": 1}, dim=64, audio_dim=32)
    twelve = torch.randn(12, 64)  # 12 slots, 64 wide: fewer rows than the width, none to spare
    init_from_clip(head, {**state, "positional_embedding": twelve})
    assert torch.equal(dict(head.named_parameters())["frame_embedding"], twelve)


def test_every_missing_key_is_counted(clip_file):
    _, state = clip_file
    head = create_head("avigate", {"resampler_layers": 2, "fusion_layers": 2}, dim=64, audio_dim=32)
    shallow = {k: v for k, v in state.items() if not k.startswith("transformer.resblocks.1.")}
    with pytest.raises(ConfigError, match=r"24 problem\(s\)"):  # 12 tensors of layer 1, in both stacks
        init_from_clip(head, shallow)


def test_the_recorded_clip_file_comes_from_text_then_frames(tmp_path):
    """The text group's record names the file; without one, frames'; a random-init record
    (either field) means no file, and never falls through to the other group."""
    from storage import RANDOM_INIT
    from training.clip_init import recorded_clip_weights

    store = str(tmp_path / "s.zarr")
    write_planted_store(store, 12, 1, splits=(8, 2, 2), seed=0)
    assert recorded_clip_weights(store) is None  # no provenance at all
    set_provenance(store, "frames", provenance_record("open_clip", "/w/frames.pt", "f" * 64, {}))
    assert recorded_clip_weights(store) == ("/w/frames.pt", "f" * 64)
    set_provenance(store, "text", provenance_record("open_clip", "/w/text.pt", "t" * 64, {}))
    assert recorded_clip_weights(store) == ("/w/text.pt", "t" * 64)
    for weights, sha in (("/w/text.pt", RANDOM_INIT), (RANDOM_INIT, "t" * 64), ("/w/text.pt", None),
                         (None, "t" * 64)):
        record = {**provenance_record("open_clip", "/w/text.pt", "t" * 64, {}), "weights": weights,
                  "weights_sha256": sha}
        set_provenance(store, "text", record)
        assert recorded_clip_weights(store) is None, (weights, sha)


def test_weights_that_do_not_fit_are_named_in_one_message(clip_file):
    """The whole message: the head, CLIP's layer count, the number of problems and the first three."""
    _, state = clip_file
    head = create_head("avigate", {"resampler_layers": 1, "fusion_layers": 1}, dim=64, audio_dim=32)
    bad = {k: v for k, v in state.items() if k not in ("transformer.resblocks.0.ln_1.bias",
                                                       "transformer.resblocks.0.mlp.c_fc.bias")}
    bad["transformer.resblocks.0.ln_2.weight"] = torch.zeros(32)
    with pytest.raises(ConfigError) as e:
        init_from_clip(head, bad)
    assert str(e.value) == (
        "CLIP weights do not fit head 'avigate' (CLIP text transformer: 4 layers): 6 problem(s), e.g. "
        "transformer.resblocks.0.ln_1.bias missing; transformer.resblocks.0.mlp.c_fc.bias missing; "
        "transformer.resblocks.0.ln_2.weight (32,) vs resampler.0.ln2.weight (64,)")
