"""Safe checkpoint loading: formats, sha256, truncation, non-state-dict pickles, strict keys."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from extractors.weights import (WeightsError, is_torchscript, load_state_dict, load_strict, require_weights,
                                strip_prefix, verify_sha256)
from storage.provenance import sha256_file

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _sd():
    g = torch.Generator().manual_seed(0)
    return {"lin.weight": torch.randn(4, 3, generator=g), "lin.bias": torch.randn(4, generator=g)}


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)


def test_each_format_loads_the_same_tensors(tmp_path):
    sd = _sd()
    torch.save(sd, tmp_path / "w.bin")
    save_file(sd, str(tmp_path / "w.safetensors"))
    net = _Net()
    net.load_state_dict(sd)
    torch.jit.script(net).save(str(tmp_path / "w.pt"))
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "train.pt")
    for name, fmt in (("w.bin", "pickle"), ("w.safetensors", "safetensors"), ("w.pt", "torchscript"),
                      ("train.pt", "pickle")):
        ck = load_state_dict(tmp_path / name)
        assert ck.format == fmt, name
        assert ck.sha256 == sha256_file(tmp_path / name)
        got = strip_prefix(ck.state_dict, "module.")
        assert set(got) == set(sd)
        for k in sd:
            torch.testing.assert_close(got[k], sd[k])
    assert is_torchscript(tmp_path / "w.pt") and not is_torchscript(tmp_path / "w.bin")


def test_sha256_mismatch_is_refused_before_reading(tmp_path):
    torch.save(_sd(), tmp_path / "w.bin")
    good = sha256_file(tmp_path / "w.bin")
    assert verify_sha256(tmp_path / "w.bin", good.upper()) == good
    with pytest.raises(WeightsError, match="sha256 mismatch") as e:
        load_state_dict(tmp_path / "w.bin", expected_sha256="0" * 64)
    assert str(tmp_path / "w.bin") in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["w.bin", "w.safetensors", "w.pt"])
def test_truncated_files_fail_clearly(tmp_path, name):
    sd = _sd()
    p = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(sd, str(p))
    elif name.endswith(".pt"):
        net = _Net()
        torch.jit.script(net).save(str(p))
    else:
        torch.save(sd, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt") as e:
        load_state_dict(p)
    assert str(e.value).startswith(str(p))


def test_missing_file():
    with pytest.raises(WeightsError, match="not found"):
        load_state_dict("/nonexistent/ViT-B-32.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('VTR_EVIL_MARK', '/tmp/vtr-evil-mark')}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_pickle_with_code_is_never_executed(tmp_path, monkeypatch):
    mark = tmp_path / "executed"
    monkeypatch.setenv("VTR_EVIL_MARK", str(mark))
    p = tmp_path / "evil.pth"
    torch.save({"lin.weight": _Evil()}, p)
    with pytest.raises(WeightsError, match="refusing to unpickle"):
        load_state_dict(p)
    assert not mark.exists()
    p2 = tmp_path / "plain.pkl"
    p2.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(WeightsError):
        load_state_dict(p2)
    assert not mark.exists()


def test_pickles_that_are_not_state_dicts(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="not a state dict"):
        load_state_dict(tmp_path / "list.pt")
    torch.save({"lin.weight": torch.zeros(2), "note": "hello"}, tmp_path / "mixed.pt")
    with pytest.raises(WeightsError, match="not tensors"):
        load_state_dict(tmp_path / "mixed.pt")


def test_strict_load_lists_missing_unexpected_and_shapes(tmp_path):
    net = _Net()
    bad = {"lin.weight": torch.zeros(5, 3), "extra.weight": torch.zeros(1)}
    with pytest.raises(WeightsError) as e:
        load_strict(net, bad, tmp_path / "x.bin", "Net")
    msg = str(e.value)
    assert "missing keys [1]: lin.bias" in msg
    assert "unexpected keys [1]: extra.weight" in msg
    assert "lin.weight (5, 3) vs (4, 3)" in msg
    before = net.lin.weight.clone()
    torch.testing.assert_close(net.lin.weight, before)  # nothing half-loaded
    load_strict(net, _sd(), tmp_path / "x.bin", "Net")
    torch.testing.assert_close(net.lin.weight, _sd()["lin.weight"])


def test_weights_are_required_unless_random_init_is_explicit():
    with pytest.raises(WeightsError, match="--random-init"):
        require_weights(None, False, "CLIP ViT-B-32", "--clip-weights")
    with pytest.raises(WeightsError, match="choose one"):
        require_weights("w.bin", True, "CLIP", "--clip-weights")
    require_weights(None, True, "CLIP", "--clip-weights")
    require_weights("w.bin", False, "CLIP", "--clip-weights")
