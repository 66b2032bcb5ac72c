"""Checkpoint files of the frozen encoders: format detection, sha256, safe loading, strict
key checks.

Rules this module enforces, before any media work starts:

* plain pickles go through ``torch.load(weights_only=True)``: arbitrary objects are never
  unpickled (a pickle that is not a state dict is refused);
* OpenAI's CLIP ``.pt`` files are TorchScript archives (a zip that carries ``code/``);
  ``torch.jit.load`` rebuilds them from TorchScript, not from Python pickles;
* ``.safetensors`` through ``safetensors``;
* a truncated or corrupt file, a sha256 that differs from the expected one, missing or
  unexpected keys and shape mismatches each raise :class:`WeightsError`, one line,
  naming the file.
"""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from storage.provenance import sha256_file

# Keys some checkpoints wrap their state dict in (open_clip training checkpoints, DDP).
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


class WeightsError(Exception):
    """A checkpoint cannot be used; ``str()`` is ``"PATH: cause"`` on one line."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = os.fspath(path)
        self.cause = " ".join(str(cause).split())
        super().__init__(f"{self.path}: {self.cause}")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its tensors and where they came from."""

    path: str
    sha256: str
    format: str  # safetensors | torchscript | pickle | hf-dir
    state_dict: dict[str, torch.Tensor]


def require_weights(weights: str | os.PathLike | None, random_init: bool, what: str,
                    flag: str) -> None:
    """No weights is an error unless random initialisation was asked for explicitly."""
    if weights is None and not random_init:
        raise WeightsError(what, f"no weights given: pass {flag} PATH, or --random-init to use "
                                 "randomly initialised weights (tests and demos only; the "
                                 "store then records RANDOM-INIT)")
    if weights is not None and random_init:
        raise WeightsError(weights, "both weights and --random-init given: choose one")


def verify_sha256(path: str | os.PathLike, expected: str | None = None) -> str:
    """The file's sha256; raises when ``expected`` is given and differs."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(p, "checkpoint file not found" if not p.exists() else "not a file")
    digest = sha256_file(p)
    if expected is not None and digest.lower() != expected.strip().lower():
        raise WeightsError(p, f"sha256 mismatch: file has {digest}, expected {expected.strip()}")
    return digest


def is_torchscript(path: str | os.PathLike) -> bool:
    """TorchScript archives are zips with a ``code/`` folder; ``torch.save`` zips have none."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.startswith("code/") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _only_tensors(obj: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for k in _WRAPPER_KEYS:
            inner = obj.get(k)
            if isinstance(inner, Mapping) and inner and all(torch.is_tensor(v) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(path, f"not a state dict (the file holds a {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise WeightsError(path, f"not a state dict: {len(bad)} entries are not tensors "
                                 f"(e.g. {', '.join(map(str, bad[:3]))})")
    return {str(k): v for k, v in obj.items()}


def load_state_dict(path: str | os.PathLike, expected_sha256: str | None = None) -> Checkpoint:
    """Read one checkpoint file safely; the format is detected from the content."""
    path = Path(path)
    digest = verify_sha256(path, expected_sha256)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            sd = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(path, f"cannot read safetensors file (truncated or corrupt?): {e}") from None
        return Checkpoint(str(path), digest, "safetensors", _only_tensors(sd, path))
    if is_torchscript(path):
        try:
            with warnings.catch_warnings():
                # deprecated in torch, yet the only reader of OpenAI's published archives
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001 - any failure here is a bad archive
            raise WeightsError(path, f"cannot load TorchScript archive (truncated or corrupt?): {e}") from None
        sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
        return Checkpoint(str(path), digest, "torchscript", _only_tensors(sd, path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(path, "refusing to unpickle: the file holds objects other than "
                                 f"tensors (weights_only=True): {_first_line(e)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise WeightsError(path, f"cannot read checkpoint (truncated or corrupt?): {_first_line(e)}") from None
    return Checkpoint(str(path), digest, "pickle", _only_tensors(obj, path))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (e.g. DataParallel's ``module.``)."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def _preview(keys: Iterable[str], n: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_strict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], path: str | os.PathLike,
                arch: str) -> None:
    """``load_state_dict(strict=True)`` with one readable error listing what does not fit."""
    own = model.state_dict()
    missing = set(own) - set(sd)
    unexpected = set(sd) - set(own)
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(set(sd) & set(own))
              if tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys [{len(missing)}]: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys [{len(unexpected)}]: {_preview(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches [{len(shapes)}] (file vs model): {', '.join(shapes[:4])}")
    if problems:
        raise WeightsError(path, f"does not fit {arch} (wrong architecture?): " + "; ".join(problems))
    model.load_state_dict(dict(sd), strict=True)
